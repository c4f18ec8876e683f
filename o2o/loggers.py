"""Experiment loggers beside the run records: TensorBoard event files or a Weights & Biases run, both optional.

`--logger csv` (the default) adds nothing: the run records (metrics.csv, evals.csv, episodes.csv, summary.json) are
always written, whatever `--logger` says. `--logger tensorboard` also writes every row they get as scalars to
`<out>/tensorboard/` (`tensorboard --logdir runs/`); `--logger wandb` logs them to a W&B run in `<out>/wandb/`,
offline (no network, no account) unless `WANDB_MODE` says otherwise; `wandb sync <out>/wandb/offline-run-*`
uploads it later. Each needs its extra: `pip install -e ".[tensorboard]"` or `".[wandb]"`.

Tags: a training-metrics row (what metrics.csv gets) as `train/<name>`, an evaluation row (what evals.csv gets) as
`eval/<name>`, both against the record's `step`. A resumed run continues the same logs: TensorBoard drops the
events after the checkpoint's step (`purge_step`), W&B resumes the run id kept in summary.json (`extra.wandb_run_id`).
A fresh run in a used directory (`--force`) drops the old TensorBoard events and starts a new W&B run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import uuid
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, Protocol

LOGGERS = ("csv", "tensorboard", "wandb")
WANDB_PROJECT = "o2o-bench"  # the W&B project unless WANDB_PROJECT names another


class LoggerError(ValueError):
    """A `--logger` that cannot be used (unknown, or its extra is not installed); the message is one line."""


class Logger(Protocol):
    """Receives the rows the CSV records get: `group` 'train' (metrics.csv) or 'eval' (evals.csv)."""

    def log(self, group: str, step: int, values: Mapping[str, float]) -> None:
        """Log one row's numbers at `step`."""

    def close(self) -> None:
        """Write everything out and release the files."""


def check_logger(name: str) -> None:
    """Raise LoggerError when `name` is not a logger or its extra is missing (before the run writes anything)."""
    if name not in LOGGERS:
        raise LoggerError(f"--logger must be one of {', '.join(LOGGERS)}, not {name!r}")
    if name != "csv" and importlib.util.find_spec(name) is None:
        raise LoggerError(f"--logger {name} needs the {name} extra: pip install -e '.[{name}]' (or pip install {name})")


def numbers(row: Mapping[str, Any]) -> dict[str, float]:
    """The finite-or-not numeric entries of a row (None, text and booleans left out)."""
    return {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoardLogger:
    """Scalars in `<out>/tensorboard/events.out.tfevents.*` (torch.utils.tensorboard, needs the tensorboard extra).

    keep_until: the step up to which events already in the directory stay (a resumed run's checkpoint); later ones,
    logged by the process that was interrupted, are dropped when TensorBoard reads the directory (`purge_step`).
    -1: a fresh run, every old event is dropped. None: all are kept.
    """

    def __init__(self, out: Path, config: Mapping[str, Any], keep_until: int | None = -1) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=None if keep_until is None else keep_until + 1)
        if keep_until == -1:
            self.writer.add_text("config", "```\n" + json.dumps(dict(config), indent=1, default=str) + "\n```")

    def log(self, group: str, step: int, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"{group}/{key}", value, step)
        self.writer.flush()  # rows come every log_every steps or evaluation: cheap, and nothing waits in memory

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A W&B run in `<out>/wandb/`, offline unless WANDB_MODE says otherwise (needs the wandb extra)."""

    def __init__(self, out: Path, config: Mapping[str, Any], name: str, group: str, run_id: str) -> None:
        import wandb

        self.run = wandb.init(dir=str(out), id=run_id, name=name, group=group, config=dict(config),
                              project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT),
                              mode=os.environ.get("WANDB_MODE", "offline"), resume="allow", reinit="create_new",
                              settings=wandb.Settings(console="off", silent=True, x_disable_stats=True))
        self.run.define_metric("step")
        for group_ in ("train", "eval"):
            self.run.define_metric(f"{group_}/*", step_metric="step")  # any step order, the record's step as x

    def log(self, group: str, step: int, values: Mapping[str, float]) -> None:
        self.run.log({"step": step, **{f"{group}/{k}": v for k, v in values.items()}})

    def close(self) -> None:
        self.run.finish()


def open_logger(name: str, out: Path, config: Mapping[str, Any], title: str, keep_until: int | None = -1,
                state: MutableMapping[str, Any] | None = None) -> Logger | None:
    """The experiment logger `--logger name` of a run directory; None for csv (the records alone).

    title: 'algorithm/dataset/seedN' (the W&B run name; its group drops the seed). keep_until: see TensorBoardLogger
    (-1 for a fresh run). state: the run's summary extras, where the W&B run id is kept so that a resumed run
    continues the same W&B run (a fresh run has none, so it starts a new one).
    """
    check_logger(name)
    if name == "tensorboard":
        return TensorBoardLogger(out, config, keep_until)
    if name == "wandb":
        state = state if state is not None else {}
        run_id = state.setdefault("wandb_run_id", uuid.uuid4().hex[:8])
        return WandbLogger(out, config, title, title.rpartition("/")[0], run_id)
    return None
