"""A stand-in algorithm file with the common command line, for the suite runner's tests (no learning, no data).

It logs one evaluation per step (normalized score = 10 x step), checkpoints every step to `<out>/checkpoint.pt`
(JSON), appends its argv and thread cap to `<out>/argv.txt`, and can be told to fail (`--fail true`), to die
without cleanup at a step the first time (`--die-at N`: os._exit after checkpointing), or to sleep per step.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # `python tests/fake_algo.py` from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from o2o.cli import RunConfig, parse_config  # noqa: E402
from o2o.records import RunRecorder, atomic_write  # noqa: E402


@dataclass
class FakeConfig(RunConfig):
    """Fields of the fake algorithm."""

    total_steps: int = 4
    fail: bool = False  # raise after the first evaluation
    die_at: int = 0  # os._exit(137) at this step when not resumed (0: never)
    sleep: float = 0.0  # seconds per step
    tag: str = ""  # free text, echoed into the config


def main(argv: list[str] | None = None) -> int:
    """Run the fake training loop."""
    cfg = parse_config(FakeConfig, argv=argv)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "argv.txt", "a") as f:
        f.write(json.dumps({"argv": sys.argv[1:] if argv is None else argv,
                            "omp": os.environ.get("OMP_NUM_THREADS")}) + "\n")
    rec = RunRecorder(out, "fake", cfg.dataset, cfg.seed, asdict(cfg), budget=cfg.budget, resume=cfg.resume)
    ckpt = out / "checkpoint.pt"
    start = 0
    if cfg.resume and ckpt.exists():
        start = json.loads(ckpt.read_text())["step"]
        rec.truncate_after(start)
    for step in range(start + 1, cfg.total_steps + 1):
        time.sleep(cfg.sleep)
        rec.log_eval(step, "offline", 0, 10.0 * step, float(step), 0.0)
        if cfg.fail:
            raise RuntimeError("fake failure requested")
        atomic_write(ckpt, json.dumps({"step": step}))
        if cfg.die_at and step == cfg.die_at and not cfg.resume:
            print(f"dying at step {step}", flush=True)
            os._exit(137)
    rec.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
