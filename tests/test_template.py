"""BC, the template algorithm (algorithms/template.py): its loss by hand, imitation that reaches the behaviour policy
on a generated dataset, packed seeds equal to seeds alone, and a resumed run equal to an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from algorithms import template
from o2o import loop
from o2o.cli import configure
from o2o.generate import behaviour_score, generate
from o2o.nets import DeterministicActor
from o2o.rng import member_generators

TINY = ["--hidden-dim", "32", "--batch-size", "64", "--eval-episodes", "1", "--device", "cpu", "--budget", "smoke",
        "--log-every", "10"]
GENERATED = "local:hopper-medium"
GENERATED_SIZE = 10_000  # transitions of the generated dataset (tests/test_compare.py uses the same file)


def run(out: Path, *args: str, dataset: tuple[str, ...] = ()) -> int:
    return template.main([*dataset, "--out", str(out), *TINY, *args])


def read(path: Path) -> str:
    return path.read_text()


def test_bc_loss_hand_computed():
    actor = DeterministicActor(3, 2, member_generators([0, 1], "t"), hidden_dim=8, n_hidden=1)
    obs, act = torch.randn(2, 5, 3), torch.rand(2, 5, 2) - 0.5
    loss = template.bc_loss(actor, obs, act, max_action=2.0)
    pred = 2.0 * actor(obs)
    for s in range(2):  # each seed's own mean of the squared error over batch and action dims (CORL's F.mse_loss)
        assert loss[s].item() == pytest.approx(torch.nn.functional.mse_loss(pred[s], act[s]).item(), rel=1e-6)


def test_bc_reaches_the_behaviour_policys_score(tmp_path):
    """On rollouts of one policy, cloning its actions scores what it scores (its normalised score is in the
    generated file's metadata); an actor that has not learnt scores a fraction of it."""
    generate(GENERATED, size=GENERATED_SIZE)
    target = behaviour_score(GENERATED)
    assert target is not None and target > 20
    args = ["--dataset", GENERATED, "--eval-episodes", "5", "--hidden-dim", "256", "--batch-size", "256",
            "--offline-steps", "1000", "--eval-every", "1000"]
    assert run(tmp_path / "untrained", *args[:-4], "--offline-steps", "1", "--eval-every", "1") == 0
    assert run(tmp_path / "bc", *args) == 0
    untrained = json.loads(read(tmp_path / "untrained" / "summary.json"))["last_score"]
    score = json.loads(read(tmp_path / "bc" / "summary.json"))["last_score"]
    assert untrained < 0.5 * target
    assert score > 0.85 * target, (score, target)


def test_packed_seeds_match_seeds_alone(hopper_file, tmp_path):
    """Seeds 0 and 1 in one process write, byte for byte, the records each writes alone, offline and online."""
    data = ("--dataset", hopper_file, "--env", "Hopper-v5")
    args = ["--offline-steps", "40", "--online-steps", "30", "--eval-every", "20", "--checkpoint-every", "1000"]
    assert run(tmp_path / "pack", "--seeds", "0,1", *args, dataset=data) == 0
    for s in (0, 1):
        assert run(tmp_path / f"alone{s}", "--seed", str(s), *args, dataset=data) == 0
        for name in ("evals.csv", "episodes.csv", "metrics.csv"):
            assert read(tmp_path / "pack" / f"seed{s}" / name) == read(tmp_path / f"alone{s}" / name), (s, name)
    phases = [line.split(",")[1] for line in read(tmp_path / "pack" / "seed0" / "evals.csv").splitlines()[1:]]
    assert phases == ["offline", "offline", "online", "online"]
    assert read(tmp_path / "pack" / "seed0" / "evals.csv") != read(tmp_path / "pack" / "seed1" / "evals.csv")


def test_a_crashed_run_resumes_to_the_records_of_an_uninterrupted_one(hopper_file, tmp_path):
    """A pack that crashed at step 51 and is resumed from its checkpoint (step 40) writes the records of one run all
    the way: the agent's state_dict holds everything its updates depend on (actor, optimiser, random stream)."""
    data = ("--dataset", hopper_file, "--env", "Hopper-v5")
    args = ["--seeds", "0,1", "--offline-steps", "80", "--eval-every", "20", "--checkpoint-every", "20"]
    assert run(tmp_path / "whole", *args, dataset=data) == 0

    class Crashing(template.BC):
        updates = 0

        def update(self, batch: loop.Batch, online: bool) -> dict[str, torch.Tensor]:
            self.updates += 1
            if self.updates > 50:
                raise RuntimeError("stopped")
            return super().update(batch, online)

    cfg = configure(template.BCConfig, template.presets, [*data, "--out", str(tmp_path / "part"), *TINY, *args])
    with pytest.raises(RuntimeError, match="stopped"):
        loop.train(cfg, loop.Algorithm(template.ALGORITHM, Crashing, template.transforms))
    assert json.loads(read(tmp_path / "part" / "seed0" / "summary.json"))["status"] == "failed"
    assert run(tmp_path / "part", *args, "--resume", "true", dataset=data) == 0
    for s in (0, 1):
        for name in ("evals.csv", "metrics.csv", "episodes.csv"):
            assert read(tmp_path / "part" / f"seed{s}" / name) == read(tmp_path / "whole" / f"seed{s}" / name)
        assert json.loads(read(tmp_path / "part" / f"seed{s}" / "summary.json"))["status"] == "finished"
