"""Renamed fields (one name per concept): a run written under the old names resumes, and a real change of a renamed
field is still refused."""

from __future__ import annotations

from pathlib import Path

from baselines import iql
from o2o.training import Checkpointer

OLD = {"config.critic_lr": "config.q_lr", "config.value_lr": "config.v_lr"}  # IQL's names before the renames


def _args(hopper_file: str, out: Path, *more: str) -> list[str]:
    return ["--dataset", hopper_file, "--env", "Hopper-v5", "--out", str(out), "--hidden-dim", "32", "--batch-size",
            "64", "--eval-episodes", "1", "--device", "cpu", "--budget", "smoke", "--log-every", "10",
            "--offline-steps", "20", "--eval-every", "20", "--checkpoint-every", "10", *more]


def _write_old_names(out: Path, q_lr: float | None = None) -> None:
    """Make the run's checkpoint and config.yaml look written before critic_lr/value_lr were renamed."""
    ck = Checkpointer(out)
    state = ck.load()
    state["identity"] = {OLD.get(k, k): v for k, v in state["identity"].items()}
    if q_lr is not None:
        state["identity"]["config.q_lr"] = q_lr
    state["config"] = {OLD.get(f"config.{k}", f"config.{k}").removeprefix("config."): v
                       for k, v in state["config"].items()}
    ck.save(state)
    text = (out / "config.yaml").read_text()
    (out / "config.yaml").write_text(text.replace("critic_lr:", "q_lr:").replace("value_lr:", "v_lr:"))


def test_resume_accepts_a_checkpoint_and_config_written_under_old_names(hopper_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert iql.main(_args(hopper_file, out)) == 0
    (out / "summary.json").unlink()  # an interrupted run
    _write_old_names(out)
    assert "q_lr:" in (out / "config.yaml").read_text()
    capsys.readouterr()
    assert iql.main(_args(hopper_file, out, "--config", str(out / "config.yaml"), "--resume", "true")) == 0
    err = capsys.readouterr().err
    assert "field 'q_lr' is deprecated" in err and "trained with other settings" not in err


def test_resume_still_refuses_a_change_of_a_renamed_field(hopper_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert iql.main(_args(hopper_file, out)) == 0
    (out / "summary.json").unlink()
    _write_old_names(out, q_lr=1e-3)
    capsys.readouterr()
    assert iql.main(_args(hopper_file, out, "--resume", "true")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "critic_lr: 0.001 -> 0.0003" in err[0] and "q_lr" not in err[0]
