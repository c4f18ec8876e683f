"""`--logger`: csv (the records alone, the default), tensorboard (real event files) and wandb (a real offline run).

The tensorboard and wandb tests need their extras and skip cleanly without them (`pip install -e ".[tensorboard]"`,
`".[wandb]"`); CI installs both (`make test EXTRAS=all`).
"""

from __future__ import annotations

import struct
import sys
import time
from pathlib import Path

import pytest
import torch

from o2o import loggers
from o2o.cli import RunConfig, parse_config
from o2o.loggers import LoggerError, check_logger
from o2o.records import RunRecorder
from o2o.training import MetricLog

sys.path.insert(0, str(Path(__file__).parent))
import fake_algo  # noqa: E402


def train_rows(recorders: list[RunRecorder], tmp: list[Path], steps: list[int]) -> None:
    """Flush one metrics row per step for each recorder's seed: loss = step / 10 + seed index."""
    log = MetricLog([d / "metrics.csv" for d in tmp], total_steps=max(steps), name="t", recorders=recorders)
    for step in steps:
        log.add({"loss": torch.tensor([step / 10 + s for s in range(len(recorders))])})
        log.flush_members(step, "offline", quiet=True)


def test_logger_is_a_field_of_every_run_config_and_csv_by_default():
    assert RunConfig().logger == "csv"
    assert parse_config(RunConfig, argv=["--logger", "tensorboard"]).logger == "tensorboard"


def test_bad_logger_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    with pytest.raises(LoggerError, match=r"^--logger must be one of csv, tensorboard, wandb, not 'tensorbord'$"):
        RunRecorder(tmp_path / "run", "iql", "local:hopper-medium", 0, {"logger": "tensorbord"})
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda name: None)  # the extra is not installed
    with pytest.raises(LoggerError) as err:
        RunRecorder(tmp_path / "run", "iql", "local:hopper-medium", 0, {"logger": "wandb"})
    assert "\n" not in str(err.value) and "pip install -e '.[wandb]'" in str(err.value)
    assert not (tmp_path / "run").exists()
    check_logger("csv")  # needs nothing


def test_csv_logs_the_records_only(tmp_path):
    rec = RunRecorder(tmp_path, "iql", "local:hopper-medium", 0, {"logger": "csv"})
    train_rows([rec], [tmp_path], [10, 20])
    rec.log_eval(20, "offline", 0, 50.0, 1000.0, 10.0)
    rec.finish()
    assert rec.logger is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evals.csv", "metrics.csv", "summary.json"]
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["step,phase,loss", "10,offline,1", "20,offline,2"]


# ------------------------------------------------------------------------------------------------------ tensorboard
def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) of every scalar tag in a TensorBoard log directory, as TensorBoard reads them (purged events
    and the tags left empty by them omitted)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    found = {tag: [(e.step, round(e.value, 5)) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    return {tag: events for tag, events in found.items() if events}


def test_tensorboard_writes_event_files_of_the_csv_rows(tmp_path):
    pytest.importorskip("tensorboard")
    dirs = [tmp_path / "seed0", tmp_path / "seed1"]
    recs = [RunRecorder(d, "iql", "local:hopper-medium", s, {"logger": "tensorboard", "seed": s})
            for s, d in enumerate(dirs)]
    train_rows(recs, dirs, [10, 20])  # a pack of two seeds: each its own event file
    recs[0].log_eval(20, "offline", 0, 50.0, 1000.0, 10.0, success_rate=None, regret=0.25)
    for r in recs:
        r.finish()
    assert list((dirs[0] / "tensorboard").glob("events.out.tfevents.*"))
    got = scalars(dirs[0] / "tensorboard")
    assert got["train/loss"] == [(10, 1.0), (20, 2.0)]
    assert got["eval/normalized_score"] == [(20, 50.0)] and got["eval/regret"] == [(20, 0.25)]
    assert "eval/success_rate" not in got  # None is not a number
    assert scalars(dirs[1] / "tensorboard")["train/loss"] == [(10, 2.0), (20, 3.0)]
    # resumed from a checkpoint at step 10: what the interrupted run logged after it is dropped, then continued
    rec = RunRecorder(dirs[0], "iql", "local:hopper-medium", 0, {"logger": "tensorboard"}, resume=True)
    rec.truncate_after(10)
    rec.log_metrics(20, {"loss": 7.0})
    rec.finish()
    assert scalars(dirs[0] / "tensorboard")["train/loss"] == [(10, 1.0), (20, 7.0)]
    # a fresh run in the same directory (--force): the old events are gone
    rec = RunRecorder(dirs[0], "iql", "local:hopper-medium", 0, {"logger": "tensorboard"})
    rec.log_metrics(5, {"loss": 9.0})
    rec.finish()
    assert scalars(dirs[0] / "tensorboard") == {"train/loss": [(5, 9.0)]}


def test_logger_flag_of_an_algorithm_file_reaches_tensorboard(tmp_path):
    """The flag on a file's command line (tests/fake_algo.py: RunConfig + RunRecorder) logs its evaluations."""
    pytest.importorskip("tensorboard")
    assert fake_algo.main(["--out", str(tmp_path), "--logger", "tensorboard", "--total-steps", "3"]) == 0
    assert scalars(tmp_path / "tensorboard")["eval/normalized_score"] == [(1, 10.0), (2, 20.0), (3, 30.0)]


# ------------------------------------------------------------------------------------------------------------ wandb
def wandb_history(run_dir: Path, rows: int, timeout: float = 30.0) -> list[dict[str, str]]:
    """The history rows of an offline W&B run, read from its .wandb file once it holds `rows` of them.

    With several runs open in one process, wandb's service may write a finished run's file shortly after finish()
    returned (always before the process exits), so the file is read again until the rows are there.
    """
    deadline = time.time() + timeout
    while True:
        try:
            history = read_wandb_history(run_dir)
        except Exception:  # a record cut mid-write: read again
            history = []
        if len(history) >= rows or time.time() > deadline:
            return history
        time.sleep(0.2)


def read_wandb_history(run_dir: Path) -> list[dict[str, str]]:
    """The history rows of an offline W&B run's .wandb file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    pos, block, records, chunk = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST piece of a record
            records.append(chunk)
            chunk = b""
    rows = []
    for raw in records:
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}
            rows.append({k: v for k, v in items.items() if not k.startswith("_")})
    return rows


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """No WANDB_MODE (the logger's default must be offline), W&B's own files under tmp_path, no network needed."""
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))


def test_wandb_writes_an_offline_run_of_the_csv_rows(tmp_path, offline_wandb):
    dirs = [tmp_path / "seed0", tmp_path / "seed1"]
    recs = [RunRecorder(d, "iql", "local:hopper-medium", s, {"logger": "wandb", "seed": s})
            for s, d in enumerate(dirs)]
    train_rows(recs, dirs, [10, 20])  # two W&B runs open at once in one process (a pack of seeds)
    recs[1].log_eval(20, "offline", 0, 50.0, 1000.0, 10.0)
    for r in recs:
        r.finish()
    runs = [list((d / "wandb").glob("offline-run-*")) for d in dirs]
    assert [len(r) for r in runs] == [1, 1]
    ids = [r.extra["wandb_run_id"] for r in recs]
    assert runs[0][0].name.endswith(ids[0]) and ids[0] != ids[1]
    assert wandb_history(runs[0][0], 2) == [{"step": "10", "train/loss": "1"}, {"step": "20", "train/loss": "2"}]
    history = wandb_history(runs[1][0], 3)
    assert history[:2] == [{"step": "10", "train/loss": "2"}, {"step": "20", "train/loss": "3"}]
    assert history[2]["step"] == "20" and history[2]["eval/normalized_score"] == "50"
    # a resumed run continues the W&B run of its summary (same id)
    rec = RunRecorder(dirs[0], "iql", "local:hopper-medium", 0, {"logger": "wandb"}, resume=True)
    rec.log_metrics(30, {"loss": 3.0})
    rec.finish()
    assert rec.extra["wandb_run_id"] == ids[0]
    assert all(p.name.split("-", 3)[-1].startswith(ids[0]) for p in (dirs[0] / "wandb").glob("offline-run-*"))
