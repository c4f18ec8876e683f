"""The pre-engine algorithm files (one seed per process), loaded from git for speed comparisons in one run.

`legacy_step(algo, obs_dim, act_dim, device)` returns a function doing one update of the file as it was at
LEGACY_COMMIT (the last commit before the engine): its own agent, its own update and its own buffer sampling
(uniform indices, one gather per field). It needs the repository's git history; without it, `legacy_step` raises
LegacyUnavailable and the benchmarks print only today's numbers.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
LEGACY_COMMIT = "55a5163"  # main before the engine (o2o/loop.py, o2o/nets.py)
PACKAGE = "legacy_o2o"
FILES = {"common": "baselines/common.py", "iql": "baselines/iql.py", "awac": "baselines/awac.py",
         "cql": "baselines/cql.py", "famo2o": "algorithms/famo2o.py"}


class LegacyUnavailable(RuntimeError):
    """The legacy files cannot be read (no git history)."""


def _load() -> None:
    if PACKAGE in sys.modules:
        return
    root = Path(tempfile.mkdtemp(prefix="o2o-legacy-")) / PACKAGE
    root.mkdir()
    (root / "__init__.py").write_text("")
    for name, path in FILES.items():
        res = subprocess.run(["git", "show", f"{LEGACY_COMMIT}:{path}"], cwd=ROOT, capture_output=True, text=True)
        if res.returncode != 0:
            raise LegacyUnavailable(f"git show {LEGACY_COMMIT}:{path}: {res.stderr.strip() or 'failed'}")
        text = res.stdout.replace("from baselines.common import", f"from {PACKAGE}.common import")
        text = text.replace("from baselines import awac, iql", f"from {PACKAGE} import awac, iql")
        (root / f"{name}.py").write_text(text)
    sys.path.insert(0, str(root.parent))
    importlib.import_module(PACKAGE)


def legacy_step(algo: str, obs_dim: int, act_dim: int, device: torch.device,
                data: tuple[torch.Tensor, ...], batch_size: int = 256) -> Callable[[], dict[str, torch.Tensor]]:
    """One update of the pre-engine `algo` (iql, awac, cql, famo2o) on uniform batches of `data` (s, a, r, s', d)."""
    _load()
    mod = importlib.import_module(f"{PACKAGE}.{algo}")
    n = len(data[0])

    def batch() -> tuple[torch.Tensor, ...]:
        idx = torch.randint(0, n, (batch_size,), device=device)
        return tuple(x[idx] for x in data)

    torch.manual_seed(0)
    if algo == "iql":
        cfg = mod.IQLConfig()
        agent = mod.make_agent(obs_dim, act_dim, cfg, device)
        return lambda: mod.update(agent, batch(), cfg)
    if algo == "awac":
        cfg = mod.AWACConfig()
        agent = mod.make_agent(obs_dim, act_dim, cfg, device)
        return lambda: mod.update(agent, batch(), cfg)
    if algo == "cql":
        agent = mod.CQL(obs_dim, act_dim, mod.CQLConfig(), device=device)
        return lambda: agent.update(batch())
    if algo == "famo2o":
        agent = mod.FamO2O(mod.FamO2OConfig(), obs_dim, act_dim, device)
        return lambda: agent.update(batch(), False)
    raise ValueError(f"no legacy file for {algo!r}")
