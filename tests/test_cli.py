"""The command line (o2o/cli.py on tyro): descriptions and choices in --help, one-line errors with a suggestion,
--config files and the run's config.yaml, deprecated names, the budget rule, FamO2O's official advantage weights."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch
import tyro._docstrings

from algorithms import famo2o, template, uni_o4
from baselines import awac, cql, iql, ppo
from o2o.cli import RunConfig, apply_budget, config_yaml, configure, field_types
from o2o.loop import LoopConfig

ENGINE_CONFIGS = [RunConfig, LoopConfig, iql.IQLConfig, awac.AWACConfig, cql.CQLConfig, famo2o.FamO2OConfig,
                  template.BCConfig]
# every algorithm file: its command line and its config class
FILES = {"iql": (iql, iql.IQLConfig), "awac": (awac, awac.AWACConfig), "cql": (cql, cql.CQLConfig),
         "ppo": (ppo, ppo.PPOConfig), "famo2o": (famo2o, famo2o.FamO2OConfig),
         "uni_o4": (uni_o4, uni_o4.UniO4Config), "template": (template, template.BCConfig)}


@pytest.mark.parametrize("cls", ENGINE_CONFIGS + [ppo.PPOConfig, uni_o4.UniO4Config], ids=lambda c: c.__name__)
def test_every_field_has_a_description(cls):
    """--help shows each field's comment (or docstring): none may be missing."""
    missing = [f.name for f in dataclasses.fields(cls) if not tyro._docstrings.get_field_docstring(cls, f.name, ())]
    assert missing == []


@pytest.mark.parametrize("name", list(FILES))
def test_help_of_every_file_describes_every_field(name, capsys, monkeypatch):
    """Each file's `--help` lists every field of its config (the engine's and RunConfig's included) with its
    description: the flag, then the description's words."""
    module, cls = FILES[name]
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    undescribed = []
    for f in dataclasses.fields(cls):
        doc = " ".join((tyro._docstrings.get_field_docstring(cls, f.name, ()) or "").split())
        at = re.search(rf"^[│ ]*--{f.name.replace('_', '-')}(?=\s)", out, re.M)  # the flag's entry in the list
        entry = " ".join(re.sub(r"[│╭╮╰╯─]", " ", out[at.start():at.start() + 2000]).split()) if at else ""
        if not doc or doc[:40] not in entry[:200 + len(doc)]:
            undescribed.append(f.name)
    assert undescribed == []


def test_help_shows_descriptions_and_allowed_values(capsys):
    with pytest.raises(SystemExit) as e:
        iql.main(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for fragment in ("{smoke,short,full}", "{paper,corl,official}", "{csv,tensorboard,wandb}",
                     "{auto,none,locomotion,antmaze,cql_antmaze,unio4_antmaze}", "τ of L₂^τ", "V Adam lr"):
        assert fragment in text


def test_unknown_flag_gets_one_line_with_the_closest_name(capsys):
    with pytest.raises(SystemExit) as e:
        configure(iql.IQLConfig, None, ["--ofline-steps", "5"])
    assert e.value.code == 2
    assert capsys.readouterr().err == ("error: unknown flag --ofline-steps (did you mean --offline-steps?); "
                                       "--help lists them\n")
    bad_int = "error: --offline-steps: invalid literal for int() with base 10: 'x'"
    for argv, line in ((["--offline-steps", "x"], bad_int),
                       (["--budget", "huge"], "error: --budget: 'huge' is not one of smoke, short, full"),
                       (["--preset", "mine"], "error: --preset: 'mine' is not one of paper, corl, official")):
        with pytest.raises(SystemExit):
            configure(iql.IQLConfig, None, argv)
        assert capsys.readouterr().err == line + "\n"


def test_values_are_written_as_before():
    cfg = configure(cql.CQLConfig, None, ["--seeds", "0,1,2", "--resume", "--compile", "false", "--target-entropy",
                                          "none", "--cql-clip-diff-min=-200", "--offline_steps", "7"])
    assert (cfg.seeds, cfg.resume, cfg.compile, cfg.target_entropy, cfg.cql_clip_diff_min, cfg.offline_steps) == \
        ((0, 1, 2), True, False, None, -200.0, 7)
    assert configure(cql.CQLConfig, None, ["--seeds", "3", "4"]).seeds == (3, 4)


def test_deprecated_names_warn_once_and_still_work(capsys, tmp_path):
    cfg = configure(cql.CQLConfig, None, ["--gamma", "0.5", "--qf-lr", "0.1"])
    assert (cfg.discount, cfg.critic_lr) == (0.5, 0.1)
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: --gamma is deprecated, use --discount (the old name goes in the next release)",
                   "warning: --qf-lr is deprecated, use --critic-lr (the old name goes in the next release)"]
    old = tmp_path / "old.yaml"
    old.write_text("normalize_obs: false\n")
    assert not configure(cql.CQLConfig, None, ["--config", str(old)]).normalize_states
    assert "field 'normalize_obs' is deprecated" in capsys.readouterr().err


def test_config_file_sits_between_budget_and_flags(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: hopper-medium-v2\noffline_steps: 5000\nbeta: 4.0\ntau: 0.01\n")
    cfg = configure(iql.IQLConfig, iql.presets, ["--config", str(path), "--budget", "smoke", "--beta", "5"])
    # the file's dataset chose the preset (CORL hopper-medium: deterministic actor); its offline_steps is not scaled
    # by the budget (as a flag); the flag beats the file; the budget still scales what neither sets
    assert (cfg.deterministic_actor, cfg.offline_steps, cfg.beta, cfg.tau, cfg.eval_every) == (True, 5000, 5.0, 0.01,
                                                                                                500)
    path.write_text("betta: 1\n")
    with pytest.raises(SystemExit):
        configure(iql.IQLConfig, None, ["--config", str(path)])
    assert capsys.readouterr().err == f"error: --config {path}: unknown field 'betta' (did you mean beta?)\n"


def test_config_yaml_reads_back_to_the_same_config(tmp_path):
    """A run's config.yaml given to --config trains the same run (infinities, None and tuples included)."""
    cfg = configure(cql.CQLConfig, cql.presets, ["--dataset", "antmaze-umaze-v2", "--budget", "short", "--seeds",
                                                 "1,2", "--target-entropy", "-2"])
    path = tmp_path / "config.yaml"
    path.write_text(config_yaml(cfg))
    again = configure(cql.CQLConfig, cql.presets, ["--config", str(path)])
    assert dataclasses.replace(again, config="") == cfg and cfg.cql_clip_diff_max == math.inf


def test_budget_rule_lives_in_the_fields():
    cfg = LoopConfig()
    short, smoke = apply_budget(cfg, "short"), apply_budget(cfg, "smoke")
    assert (short.offline_steps, short.eval_every, short.eval_episodes) == (100_000, 500, 10)  # episodes: smoke only
    assert (smoke.offline_steps, smoke.eval_every, smoke.eval_episodes) == (1000, 500, 2)
    assert all("smoke" in f.metadata for f in dataclasses.fields(cfg) if f.name in ("offline_steps", "eval_episodes"))
    assert set(field_types(LoopConfig)) == {f.name for f in dataclasses.fields(LoopConfig)}


def test_famo2o_official_weights_hand_computed():
    """The official code's broadcast: sample j's weight is mean over i of min(exp(A_j·β_i), 100), not its own."""
    adv = torch.tensor([[0.5, -1.0, 2.0]])
    beta = torch.tensor([[1.0, 2.0, 3.0]])
    by_hand = [sum(min(math.exp(a * b), 100.0) for b in (1.0, 2.0, 3.0)) / 3 for a in (0.5, -1.0, 2.0)]
    got = famo2o.official_awr_weights(adv, beta, 100.0)
    assert got[0].tolist() == pytest.approx(by_hand, rel=1e-6)  # e.g. j = 2: (e² + e⁴ + 100) / 3
    paper = famo2o.awr_weights(adv, beta, 100.0)
    assert paper[0].tolist() == pytest.approx([math.exp(0.5), math.exp(-2.0), 100.0], rel=1e-6)
    two = famo2o.official_awr_weights(torch.cat([adv, adv * 2]), torch.cat([beta, beta]))  # per seed, never mixed
    assert torch.equal(two[:1], got)
