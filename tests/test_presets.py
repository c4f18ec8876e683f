"""`--preset corl` reproduces CORL's per-dataset configs field for field; preset files name their source.

The table below is transcribed by hand from CORL's YAML files (github.com/corl-team/CORL at eeeeef2, the paths in
the keys), in CORL's own field names; CORL_NAMES maps them to o2o-bench's fields. Run identity fields (seed, device,
env, project, group, name, checkpoints_path, load_model, deterministic_torch, test_seed) are not config here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from algorithms import famo2o
from baselines import awac, cql, iql
from o2o.cli import configure
from o2o.presets import CONFIGS
from o2o.specs import get_spec

_IQL_COMMON = dict(actor_lr=3e-4, batch_size=256, buffer_size=10_000_000, discount=0.99, eval_freq=5000,
                   max_timesteps=1_000_000, n_episodes=10, normalize=True, qf_lr=3e-4, vf_lr=3e-4)
_AWAC_LOCO = dict(awac_lambda=0.3333, batch_size=256, buffer_size=10_000_000, eval_frequency=1000, gamma=0.99,
                  hidden_dim=256, learning_rate=0.0003, n_test_episodes=10, num_train_ops=1_000_000, tau=0.005)
_CQL_LOCO = dict(alpha_multiplier=1.0, backup_entropy=False, batch_size=256, bc_steps=0, buffer_size=10_000_000,
                 cql_clip_diff_max=math.inf, cql_clip_diff_min=-math.inf, cql_importance_sample=True,
                 cql_lagrange=False, cql_max_target_backup=False, cql_alpha=10.0, cql_n_actions=10,
                 cql_target_action_gap=-1.0, cql_temp=1.0, discount=0.99, eval_freq=5000, max_timesteps=1_000_000,
                 n_episodes=10, normalize=True, orthogonal_init=True, policy_lr=3.0e-05, qf_lr=0.0003,
                 soft_target_update_rate=0.005, target_update_period=1, q_n_hidden_layers=3, reward_scale=1.0,
                 reward_bias=0.0, use_automatic_entropy_tuning=True)
CORL = {
    ("iql", "hopper-medium-v2", "configs/offline/iql/hopper/medium_v2.yaml"):
        dict(_IQL_COMMON, beta=3.0, iql_deterministic=True, iql_tau=0.7, normalize_reward=True, tau=0.001),
    ("iql", "hopper-medium-expert-v2", "configs/offline/iql/hopper/medium_expert_v2.yaml"):
        dict(_IQL_COMMON, beta=6.0, iql_deterministic=False, iql_tau=0.5, normalize_reward=False, tau=0.005),
    ("iql", "halfcheetah-medium-v2", "configs/offline/iql/halfcheetah/medium_v2.yaml"):
        dict(_IQL_COMMON, beta=3.0, iql_deterministic=False, iql_tau=0.7, normalize_reward=False, tau=0.005),
    ("awac", "hopper-medium-v2", "configs/offline/awac/hopper/medium_v2.yaml"): _AWAC_LOCO,
    ("awac", "hopper-medium-expert-v2", "configs/offline/awac/hopper/medium_expert_v2.yaml"): _AWAC_LOCO,
    ("awac", "halfcheetah-medium-v2", "configs/offline/awac/halfcheetah/medium_v2.yaml"): _AWAC_LOCO,
    ("cql", "hopper-medium-v2", "configs/offline/cql/hopper/medium_v2.yaml"): dict(_CQL_LOCO, normalize_reward=True),
    ("cql", "hopper-medium-expert-v2", "configs/offline/cql/hopper/medium_expert_v2.yaml"):
        dict(_CQL_LOCO, normalize_reward=False),
    ("cql", "halfcheetah-medium-v2", "configs/offline/cql/halfcheetah/medium_v2.yaml"):
        dict(_CQL_LOCO, normalize_reward=False),
}
# CORL field -> o2o-bench field(s), per algorithm; the reward fields are checked through reward_kind below
_COMMON = dict(batch_size="batch_size", buffer_size="buffer_size", max_timesteps="offline_steps",
               num_train_ops="offline_steps", eval_freq="eval_every", eval_frequency="eval_every",
               n_episodes="eval_episodes", n_test_episodes="eval_episodes", normalize="normalize_states",
               discount="discount", gamma="discount")
CORL_NAMES = {
    "iql": dict(_COMMON, actor_lr="actor_lr", qf_lr="critic_lr", vf_lr="value_lr", beta="beta", iql_tau="expectile",
                iql_deterministic="deterministic_actor", tau="tau"),
    "awac": dict(_COMMON, awac_lambda="awac_lambda", hidden_dim="hidden_dim", tau="tau",
                 learning_rate=("actor_lr", "critic_lr")),
    "cql": dict(_COMMON, policy_lr="actor_lr", qf_lr="critic_lr", soft_target_update_rate="tau",
                q_n_hidden_layers="q_hidden_layers", use_automatic_entropy_tuning="auto_entropy",
                **{k: k for k in ("alpha_multiplier", "backup_entropy", "bc_steps", "cql_clip_diff_max",
                                  "cql_clip_diff_min", "cql_importance_sample", "cql_lagrange", "cql_max_target_backup",
                                  "cql_alpha", "cql_n_actions", "cql_target_action_gap", "cql_temp", "orthogonal_init",
                                  "target_update_period")}),
}
REWARD_FIELDS = ("normalize_reward", "reward_scale", "reward_bias")
MODULES = {"iql": (iql, iql.IQLConfig), "awac": (awac, awac.AWACConfig), "cql": (cql, cql.CQLConfig)}


def corl_reward_kind(algo: str, fields: dict) -> str:
    """CORL's locomotion reward: normalize_reward scales by 1000 / (max − min return) (then × scale + bias, CQL)."""
    if not fields.get("normalize_reward", False):
        return "none"
    assert (fields.get("reward_scale", 1.0), fields.get("reward_bias", 0.0)) == (1.0, 0.0)
    return "locomotion"


@pytest.mark.parametrize("key", list(CORL), ids=[f"{a}-{d}" for a, d, _ in CORL])
def test_preset_corl_is_corls_config_field_for_field(key):
    algo, dataset, path = key
    module, cls = MODULES[algo]
    cfg = configure(cls, module.presets, ["--dataset", dataset, "--preset", "corl"])
    for name, value in CORL[key].items():
        if name in REWARD_FIELDS:
            continue
        targets = CORL_NAMES[algo][name]
        for ours in (targets,) if isinstance(targets, str) else targets:
            assert getattr(cfg, ours) == value, f"{path}: {name} {value!r} -> {ours} {getattr(cfg, ours)!r}"
    assert cfg.reward_kind == corl_reward_kind(algo, CORL[key]), path
    assert cfg.preset == "corl" and cfg.online_steps == 0
    # the file names its CORL source
    assert path in (CONFIGS / algo / "corl" / f"{dataset}.yaml").read_text().splitlines()[0]


def test_cql_corl_actor_gets_corls_init():
    """CORL's offline cql.py builds the actor with PyTorch's default init and a small xavier output layer."""
    cfg = configure(cql.CQLConfig, cql.presets, ["--dataset", "hopper-medium-v2"])
    assert cfg.orthogonal_init and not cfg.actor_orthogonal_init
    assert configure(cql.CQLConfig, None, []).actor_orthogonal_init  # JaxCQL's orthogonal actor by default


def _cql_output_singular_values(args: list[str]) -> dict[str, torch.Tensor]:
    """Singular values of the output layers of the CQL networks that --preset corl builds for `args`."""
    from o2o.loop import Setup

    cfg = configure(cql.CQLConfig, cql.presets, args)
    spec = get_spec(cfg.dataset)
    setup = Setup([0], spec, spec.obs_dim, spec.act_dim, 1.0, torch.device("cpu"), np.zeros((1, spec.obs_dim)))
    agent = cql.CQL(cfg, setup)
    layers = {"actor": agent.actor.net.layers[-1], "critic": agent.critic.net.layers[-1]}
    return {k: torch.linalg.svdvals(layer.weight[0]) for k, layer in layers.items()} | {
        "bias": torch.cat([layer.bias.flatten() for layer in layers.values()])}


def test_cql_corl_finetune_output_layers_get_gain_sqrt2():
    """CORL's finetune cql.py initialises every layer of the actor and both critics orthogonally with gain √2, the
    output layers too (an orthogonal W of gain g has every singular value g); its offline file keeps 1e-2 on the
    critics' output layer and a xavier one (not orthogonal) on the actor's."""
    online = _cql_output_singular_values(["--dataset", "pen-cloned-v1", "--online-steps", "10"])
    for name in ("actor", "critic"):
        assert torch.allclose(online[name], torch.full_like(online[name], math.sqrt(2.0)), rtol=1e-5), name
    assert online["actor"].numel() == 2 * get_spec("pen-cloned-v1").act_dim  # μ and log σ rows, one layer
    assert not online["bias"].any()
    offline = _cql_output_singular_values(["--dataset", "pen-cloned-v1"])
    assert torch.allclose(offline["critic"], torch.tensor([1e-2]))
    assert offline["actor"].max() < 0.05 and not torch.allclose(offline["actor"], offline["actor"][:1].expand(
        offline["actor"].shape))  # xavier-uniform 1e-2: small, not orthogonal


def test_finetune_files_and_the_online_switch():
    off = configure(cql.CQLConfig, cql.presets, ["--dataset", "pen-cloned-v1"])
    on = configure(cql.CQLConfig, cql.presets, ["--dataset", "pen-cloned-v1", "--online-steps", "10"])
    assert (off.cql_max_target_backup, off.normalize_states) == (False, True)  # configs/offline/cql/pen/cloned_v1
    assert (on.cql_max_target_backup, on.normalize_states, on.online_steps) == (True, False, 10)  # finetune/...
    ft = configure(iql.IQLConfig, iql.presets, ["--dataset", "antmaze-umaze-v2", "--finetune", "--budget", "short"])
    assert (ft.online_steps, ft.offline_steps, ft.eval_every, ft.expectile) == (100_000, 100_000, 5000, 0.9)


def test_every_preset_file_names_its_source_and_sets_known_fields():
    classes = {"iql": iql.IQLConfig, "awac": awac.AWACConfig, "cql": cql.CQLConfig,
               "famo2o_iql": famo2o.FamO2OConfig, "famo2o_awac": famo2o.FamO2OConfig}
    from algorithms import template, uni_o4
    from baselines import ppo
    from o2o.cli import field_types
    from o2o.presets import read_preset
    classes.update(bc=template.BCConfig, uni_o4=uni_o4.UniO4Config, ppo=ppo.PPOConfig)
    files = sorted(CONFIGS.rglob("*.yaml"))
    assert len(files) > 150
    for path in files:
        algo = path.relative_to(CONFIGS).parts[0]
        first = path.read_text().splitlines()[0]
        assert first.startswith(("# Source:", "# Not ")), path
        assert set(read_preset(path)) <= set(field_types(classes[algo])), path


def test_fallback_source_is_announced(capsys):
    cfg = configure(iql.IQLConfig, iql.presets, ["--dataset", "kitchen-mixed-v0", "--preset", "corl"])
    assert (cfg.beta, cfg.actor_dropout) == (0.5, 0.1)
    assert "no corl preset for kitchen-mixed-v0; using configs/iql/paper/kitchen.yaml" in capsys.readouterr().err
    paper = configure(iql.IQLConfig, iql.presets, ["--dataset", "hopper-medium-v2", "--preset", "paper"])
    assert (paper.reward_kind, paper.deterministic_actor, paper.tau, paper.preset) == ("locomotion", False, 0.005,
                                                                                     "paper")
