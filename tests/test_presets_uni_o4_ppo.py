"""Uni-O4's and PPO's presets by source (configs/uni_o4/official/, configs/ppo/{official,unio4}/), the renamed
fields, and what a run resolves to: for every dataset the suites run Uni-O4 on and every D4RL dataset of the four
domains, the resolved config equals the one the Python preset tables gave before they moved to YAML.

The tables below were printed by the code before the move (algorithms/uni_o4.py PRESETS, FAMILY_PRESETS,
DATASET_PRESETS merged by its `presets(spec)`; baselines/ppo.py `presets(spec, "unio4")`), in the old field names.
"""

from __future__ import annotations

import dataclasses
import re
import types

import pytest

from algorithms import uni_o4 as U
from baselines import ppo
from o2o.cli import configure
from o2o.presets import CONFIGS
from o2o.registry import DOMAIN_OF_FAMILY, REGISTRY, family_of
from o2o.specs import get_spec

OLD_NAMES = {"state_norm": "normalize_states", "gamma": "discount", "q_lr": "critic_lr", "v_lr": "value_lr",
             "norm_obs": "normalize_states", "norm_adv": "normalize_advantages", "norm_reward": "normalize_rewards"}
OLD_DEFAULTS = dict(dataset='local:hopper-medium', env=None, seed=0, out='', budget='full', device='auto',
                    resume=False, eval_episodes=10, log_every=5000, checkpoint_every=50000, logger='csv',
                    config='', seeds=(), state_norm=True, obs_norm_eps=0.001, reward_kind='none',
                    clip_actions=False, bc_positive_return_only=False, bootstrap_timeouts=True, gamma=0.99,
                    value_method='iql', critic_steps=2000000, critic_batch=512, q_lr=0.0001, v_lr=0.0001,
                    q_hidden=1024, q_depth=2, v_hidden=512, v_depth=3, omega=0.7, tau=0.005, target_every=2,
                    critic_from='', n_policies=4, bc_steps=400000, bc_batch=512, bc_lr=0.0001, pi_hidden=256,
                    pi_depth=3, pi_activation='relu', bc_alpha=0.1, bc_disagreement='working', bc_kl_cap=1.0,
                    dyn_members=7, dyn_elites=5, dyn_hidden=(200, 200, 200, 200),
                    dyn_weight_decay=(2.5e-05, 5e-05, 7.5e-05, 7.5e-05, 0.0001), dyn_lr=0.001, dyn_batch=256,
                    dyn_holdout_ratio=0.2, dyn_holdout_max=1000, dyn_patience=5, dyn_max_epochs=1000,
                    dyn_max_updates=2000000, dyn_logvar_coef=0.01, improve_steps=10000, improve_batch=512,
                    improve_lr=0.0001, clip_ratio=0.25, clip_decay_steps=200, entropy_weight=0.0,
                    q_action_clip=False, grad_clip=0.5, ope_every=100, ope_horizon=1000, ope_batch=512, gate='amq',
                    final_policy='last', offline_eval_every=0, selection='ope', selection_top_k=3,
                    online_steps=1000000, online_eval_every=20000, online_rollout=2048, online_minibatch=128,
                    online_epochs=30, online_actor_lr=2e-05, online_critic_lr=0.0002, online_clip=0.05,
                    online_ent_coef=0.01, online_gae_lambda=0.95, online_reward_scale=1.0,
                    online_critic_init='offline_v', online_mc_steps=1000000, cache=True, threads=1)
OLD_PRESETS = [  # (datasets, the preset fields they resolved to)
    (['ant-expert-v2', 'ant-full-replay-v2', 'ant-medium-expert-v2', 'ant-medium-replay-v2', 'ant-medium-v2',
      'ant-random-v2'],
     dict(state_norm=True, value_method='iql', reward_kind='none')),
    (['antmaze-large-diverse-v0', 'antmaze-large-diverse-v2', 'antmaze-large-play-v0', 'antmaze-large-play-v2'],
     dict(state_norm=False, value_method='iql', reward_kind='unio4_antmaze', bc_positive_return_only=True,
          q_hidden=256, q_depth=3, v_hidden=256, v_depth=3, omega=0.9, improve_lr=3e-05,
          dyn_hidden=(400, 400, 400, 400), dyn_lr=0.0003, eval_episodes=30, online_reward_scale=0.1,
          ope_horizon=200)),
    (['antmaze-medium-diverse-v0', 'antmaze-medium-diverse-v2', 'antmaze-medium-play-v0', 'antmaze-medium-play-v2'],
     dict(state_norm=False, value_method='iql', reward_kind='unio4_antmaze', bc_positive_return_only=True,
          q_hidden=256, q_depth=3, v_hidden=256, v_depth=3, omega=0.9, improve_lr=3e-05,
          dyn_hidden=(400, 400, 400, 400), dyn_lr=0.0003, eval_episodes=30, online_reward_scale=0.1,
          ope_horizon=150)),
    (['antmaze-umaze-diverse-v0', 'antmaze-umaze-diverse-v2', 'antmaze-umaze-v0', 'antmaze-umaze-v2'],
     dict(state_norm=False, value_method='iql', reward_kind='unio4_antmaze', bc_positive_return_only=True,
          q_hidden=256, q_depth=3, v_hidden=256, v_depth=3, omega=0.9, improve_lr=3e-05,
          dyn_hidden=(400, 400, 400, 400), dyn_lr=0.0003, eval_episodes=30, online_reward_scale=0.1,
          ope_horizon=70)),
    (['door-cloned-v1'],
     dict(state_norm=False, value_method='iql', reward_kind='none', clip_actions=True, improve_lr=1e-05,
          dyn_hidden=(400, 400, 400, 400), dyn_lr=0.0003, dyn_patience=10, online_minibatch=256, online_epochs=10,
          online_actor_lr=1e-05, ope_horizon=20)),
    (['door-expert-v1', 'hammer-expert-v1', 'minari:D4RL/door/cloned-v2', 'minari:D4RL/door/human-v2',
      'minari:D4RL/hammer/cloned-v2', 'minari:D4RL/hammer/human-v2', 'minari:D4RL/pen/cloned-v2',
      'minari:D4RL/pen/human-v2', 'minari:D4RL/relocate/cloned-v2', 'minari:D4RL/relocate/human-v2',
      'pen-expert-v1', 'relocate-expert-v1'],
     dict(state_norm=False, value_method='iql', reward_kind='none', clip_actions=True, improve_lr=1e-05,
          dyn_hidden=(400, 400, 400, 400), dyn_lr=0.0003, dyn_patience=10, online_minibatch=256, online_epochs=10,
          online_actor_lr=1e-05)),
    (['door-human-v1'],
     dict(state_norm=False, value_method='iql', reward_kind='none', clip_actions=True, improve_lr=1e-05,
          dyn_hidden=(400, 400, 400, 400), dyn_lr=0.0003, dyn_patience=20, online_minibatch=256, online_epochs=10,
          online_actor_lr=1e-05, improve_steps=5000, ope_horizon=50)),
    (['halfcheetah-expert-v2', 'halfcheetah-full-replay-v2', 'halfcheetah-random-v2',
      'minari:mujoco/halfcheetah/expert-v0', 'minari:mujoco/halfcheetah/medium-v0',
      'minari:mujoco/halfcheetah/simple-v0'],
     dict(state_norm=True, value_method='iql', reward_kind='none', online_actor_lr=3e-05, online_epochs=30,
          online_reward_scale=0.1)),
    (['halfcheetah-medium-expert-v2', 'local:halfcheetah-medium-expert'],
     dict(state_norm=True, value_method='mc_sarsa', reward_kind='none', online_actor_lr=2e-05, online_epochs=10,
          online_reward_scale=0.1)),
    (['halfcheetah-medium-replay-v2', 'local:halfcheetah-medium-replay'],
     dict(state_norm=False, value_method='iql', reward_kind='none', online_actor_lr=3e-05, online_epochs=20,
          online_reward_scale=0.1, pi_activation='tanh')),
    (['halfcheetah-medium-v2', 'local:halfcheetah-medium'],
     dict(state_norm=True, value_method='iql', reward_kind='none', online_actor_lr=3e-05, online_epochs=30,
          online_reward_scale=0.1, pi_activation='tanh')),
    (['hammer-cloned-v1'],
     dict(state_norm=True, value_method='iql', reward_kind='none', clip_actions=True, improve_lr=1e-05,
          dyn_hidden=(400, 400, 400, 400), dyn_lr=0.0003, dyn_patience=10, online_minibatch=256, online_epochs=10,
          online_actor_lr=1e-05, pi_activation='tanh', ope_horizon=20, online_reward_scale=0.1)),
    (['hammer-human-v1'],
     dict(state_norm=True, value_method='iql', reward_kind='none', clip_actions=True, improve_lr=1e-05,
          dyn_hidden=(400, 400, 400, 400), dyn_lr=0.0003, dyn_patience=20, online_minibatch=256, online_epochs=10,
          online_actor_lr=1e-05, pi_activation='tanh', ope_horizon=50, online_reward_scale=0.1)),
    (['hopper-expert-v2', 'hopper-full-replay-v2', 'hopper-medium-replay-v2', 'hopper-medium-v2', 'hopper-random-v2',
      'local:hopper-medium', 'local:hopper-medium-replay', 'minari:mujoco/hopper/expert-v0',
      'minari:mujoco/hopper/medium-v0', 'minari:mujoco/hopper/simple-v0'],
     dict(state_norm=True, value_method='iql', reward_kind='none', online_actor_lr=2e-05, online_epochs=10,
          online_reward_scale=0.1)),
    (['hopper-medium-expert-v2', 'local:hopper-medium-expert'],
     dict(state_norm=True, value_method='mc_sarsa', reward_kind='none', online_actor_lr=6e-06, online_epochs=5,
          online_reward_scale=0.1)),
    (['kitchen-complete-v0'],
     dict(state_norm=False, value_method='iql', reward_kind='none', improve_steps=1000,
          dyn_hidden=(400, 400, 400, 400), dyn_lr=0.0003, dyn_patience=20, critic_steps=500000, bc_steps=100000,
          ope_horizon=10, improve_lr=1e-05)),
    (['kitchen-mixed-v0'],
     dict(state_norm=True, value_method='iql', reward_kind='none', improve_steps=1000,
          dyn_hidden=(400, 400, 400, 400), dyn_lr=0.0003, dyn_patience=20, critic_steps=1000000, bc_steps=200000,
          ope_horizon=4, improve_lr=1e-05, bc_alpha=0.0)),
    (['kitchen-partial-v0'],
     dict(state_norm=True, value_method='iql', reward_kind='none', improve_steps=1000,
          dyn_hidden=(400, 400, 400, 400), dyn_lr=0.0003, dyn_patience=20, critic_steps=1000000, bc_steps=200000,
          ope_horizon=4, improve_lr=1e-05)),
    (['local:walker2d-medium', 'local:walker2d-medium-expert', 'minari:mujoco/walker2d/expert-v0',
      'minari:mujoco/walker2d/medium-v0', 'minari:mujoco/walker2d/simple-v0', 'walker2d-expert-v2',
      'walker2d-full-replay-v2', 'walker2d-medium-expert-v2', 'walker2d-medium-v2', 'walker2d-random-v2'],
     dict(state_norm=True, value_method='iql', reward_kind='none', online_actor_lr=3e-05, online_epochs=30,
          online_reward_scale=1.0)),
    (['local:walker2d-medium-replay', 'walker2d-medium-replay-v2'],
     dict(state_norm=True, value_method='iql', reward_kind='none', online_actor_lr=3e-05, online_epochs=30,
          online_reward_scale=1.0, critic_steps=500000)),
    (['minari:D4RL/antmaze/large-diverse-v1', 'minari:D4RL/antmaze/large-play-v1',
      'minari:D4RL/antmaze/medium-diverse-v1', 'minari:D4RL/antmaze/medium-play-v1',
      'minari:D4RL/antmaze/umaze-diverse-v1', 'minari:D4RL/antmaze/umaze-v1'],
     dict(state_norm=False, value_method='iql', reward_kind='unio4_antmaze', bc_positive_return_only=True,
          q_hidden=256, q_depth=3, v_hidden=256, v_depth=3, omega=0.9, improve_lr=3e-05,
          dyn_hidden=(400, 400, 400, 400), dyn_lr=0.0003, eval_episodes=30, online_reward_scale=0.1)),
    (['minari:D4RL/kitchen/complete-v2', 'minari:D4RL/kitchen/mixed-v2', 'minari:D4RL/kitchen/partial-v2'],
     dict(state_norm=False, value_method='iql', reward_kind='none', improve_steps=1000,
          dyn_hidden=(400, 400, 400, 400), dyn_lr=0.0003, dyn_patience=20)),
    (['pen-cloned-v1'],
     dict(state_norm=False, value_method='iql', reward_kind='none', clip_actions=True, improve_lr=1e-05,
          dyn_hidden=(400, 400, 400, 400), dyn_lr=0.0003, dyn_patience=10, online_minibatch=256, online_epochs=10,
          online_actor_lr=3e-06, ope_horizon=20)),
    (['pen-human-v1'],
     dict(state_norm=False, value_method='iql', reward_kind='none', clip_actions=True, improve_lr=1e-05,
          dyn_hidden=(400, 400, 400, 400), dyn_lr=0.0003, dyn_patience=20, online_minibatch=256, online_epochs=10,
          online_actor_lr=3e-06, critic_steps=1000000, bc_steps=200000, ope_horizon=50)),
    (['relocate-cloned-v1'],
     dict(state_norm=False, value_method='iql', reward_kind='none', clip_actions=True, improve_lr=1e-05,
          dyn_hidden=(400, 400, 400, 400), dyn_lr=0.0003, dyn_patience=10, online_minibatch=256, online_epochs=10,
          online_actor_lr=1e-05, pi_activation='tanh', ope_horizon=20)),
    (['relocate-human-v1'],
     dict(state_norm=False, value_method='iql', reward_kind='none', clip_actions=True, improve_lr=1e-05,
          dyn_hidden=(400, 400, 400, 400), dyn_lr=0.0003, dyn_patience=20, online_minibatch=256, online_epochs=10,
          online_actor_lr=1e-05, pi_activation='tanh', ope_horizon=50)),
]
_PPO_COMMON = dict(num_envs=1, rollout_steps=2048, minibatch_size=128, epochs=30, actor_lr=2e-05,
                   critic_lr=0.0002, gamma=0.99, gae_lambda=0.95, clip=0.05, value_clip=0.05, ent_coef=0.01,
                   vf_coef=2.0, max_grad_norm=0.5, norm_adv=True, norm_obs=False, norm_reward=False, anneal_lr=True,
                   hidden=(256, 256, 256), critic_hidden=(256, 256, 256), activation='relu', preset='unio4')
PPO_UNIO4 = [  # (datasets, baselines/ppo.py presets(spec, 'unio4') before the move to YAML)
    (['ant-expert-v2', 'ant-full-replay-v2', 'ant-medium-expert-v2', 'ant-medium-replay-v2', 'ant-medium-v2',
      'ant-random-v2', 'antmaze-large-diverse-v0', 'antmaze-large-diverse-v2', 'antmaze-large-play-v0',
      'antmaze-large-play-v2', 'antmaze-medium-diverse-v0', 'antmaze-medium-diverse-v2',
      'antmaze-medium-play-v0', 'antmaze-medium-play-v2', 'antmaze-umaze-diverse-v0',
      'antmaze-umaze-diverse-v2', 'antmaze-umaze-v0', 'antmaze-umaze-v2', 'kitchen-complete-v0',
      'kitchen-mixed-v0', 'kitchen-partial-v0'],
     dict(_PPO_COMMON, minibatch_size=128, epochs=30, actor_lr=2e-05)),
    (['door-cloned-v1', 'door-expert-v1', 'door-human-v1', 'hammer-cloned-v1', 'hammer-expert-v1', 'hammer-human-v1',
      'pen-cloned-v1', 'pen-expert-v1', 'pen-human-v1', 'relocate-cloned-v1', 'relocate-expert-v1',
      'relocate-human-v1'],
     dict(_PPO_COMMON, minibatch_size=256, epochs=10, actor_lr=3e-06)),
    (['halfcheetah-expert-v2', 'halfcheetah-full-replay-v2', 'halfcheetah-medium-expert-v2',
      'halfcheetah-medium-replay-v2', 'halfcheetah-medium-v2', 'halfcheetah-random-v2',
      'local:halfcheetah-medium', 'local:halfcheetah-medium-expert', 'local:halfcheetah-medium-replay',
      'local:walker2d-medium', 'local:walker2d-medium-expert', 'local:walker2d-medium-replay',
      'walker2d-expert-v2', 'walker2d-full-replay-v2', 'walker2d-medium-expert-v2', 'walker2d-medium-replay-v2',
      'walker2d-medium-v2', 'walker2d-random-v2'],
     dict(_PPO_COMMON, minibatch_size=128, epochs=30, actor_lr=3e-05)),
    (['hopper-expert-v2', 'hopper-full-replay-v2', 'hopper-medium-expert-v2', 'hopper-medium-replay-v2',
      'hopper-medium-v2', 'hopper-random-v2', 'local:hopper-medium', 'local:hopper-medium-expert',
      'local:hopper-medium-replay'],
     dict(_PPO_COMMON, minibatch_size=128, epochs=10, actor_lr=2e-05)),
]
# stage keys of UniO4Config(dataset="local:hopper-medium"), and with q_lr 3e-4, state_norm false, gamma 0.9, before the
# renames: the cache and partial checkpoints of a run made then are found again
OLD_KEYS = {'critic': 'critic-28a7c2300ce3888f', 'dynamics': 'dynamics-e7ac86457809adb1', 'bc': 'bc-749e29c260a11863',
            'improve': 'improve-2d37bc97ba4f389c'}
OLD_KEYS_CHANGED = {'critic': 'critic-8d72fe8a975de253', 'dynamics': 'dynamics-d5e229cb66dd3a59',
                    'bc': 'bc-138ab65d7d93aaea', 'improve': 'improve-f81895d13afa6ba5'}


def renamed(fields: dict) -> dict:
    """Old field names -> current ones."""
    return {OLD_NAMES.get(k, k): v for k, v in fields.items()}


def spec_of(name: str):
    """The registry's spec; for a Minari id (whose spec needs the downloaded dataset) the three fields presets use."""
    if name.startswith("minari:"):
        family = family_of(name)
        return types.SimpleNamespace(name=name, family=family, domain=DOMAIN_OF_FAMILY[family])
    return get_spec(name)


UNI_O4_CASES = [(d, p) for datasets, p in OLD_PRESETS for d in datasets]


def test_the_table_covers_the_suites_and_the_registry():
    from o2o.suite import load_suite

    suite_datasets = {d for path in sorted((CONFIGS.parent / "suites").glob("*.yaml"))
                      for a in load_suite(path, check_files=False).algorithms.values() if a.file.name == "uni_o4.py"
                      for d in a.datasets}
    d4rl = {n for n in REGISTRY if get_spec(n).domain in ("locomotion", "antmaze", "adroit", "kitchen")}
    assert suite_datasets and (suite_datasets | d4rl) <= {d for d, _ in UNI_O4_CASES}


@pytest.mark.parametrize("dataset,preset", UNI_O4_CASES, ids=[d for d, _ in UNI_O4_CASES])
def test_uni_o4_official_preset_resolves_as_before(dataset, preset):
    expected = renamed({**OLD_DEFAULTS, **preset, "dataset": dataset})
    if dataset.startswith("minari:"):  # no spec without the dataset: the presets function on the spec's fields
        fields = U.presets(U.UniO4Config(), spec_of(dataset))
        cfg = dataclasses.replace(U.UniO4Config(dataset=dataset), **fields)
    else:
        cfg = configure(U.UniO4Config, U.presets, ["--dataset", dataset])
    got = dataclasses.asdict(cfg)
    assert got.pop("preset") == "official"
    assert got == expected


def test_uni_o4_preset_layers_and_fallback(capsys):
    """domain < family < dataset (hopper-medium-expert: the hopper online lr, then its own); --preset paper has no
    files (the paper's appendix values are not transcribed): the official files, announced."""
    cfg = configure(U.UniO4Config, U.presets, ["--dataset", "local:hopper-medium-expert", "--online-epochs", "7"])
    assert (cfg.normalize_states, cfg.value_method, cfg.online_actor_lr, cfg.online_epochs) == (True, "mc_sarsa", 6e-6,
                                                                                               7)
    paper = configure(U.UniO4Config, U.presets, ["--dataset", "antmaze-umaze-v2", "--preset", "paper"])
    assert (paper.preset, paper.omega, paper.ope_horizon) == ("paper", 0.9, 70)
    assert "uni_o4 has no paper preset for antmaze-umaze-v2; using its official preset" in capsys.readouterr().err
    for path in sorted((CONFIGS / "uni_o4" / "official").glob("*.yaml")):  # each names its official script
        text = path.read_text()
        assert text.startswith("# Source: Uni-O4 official code, github.com/Lei-Kun/Uni-O4 at 1eecc45:\n"), path
        assert re.search(r"\b(scripts|ppo_finetune|transition_model)/\S+\.(sh|py)\b|main\.py", text), path


def test_uni_o4_old_names_still_work(capsys):
    cfg = configure(U.UniO4Config, U.presets, ["--state-norm", "false", "--gamma", "0.9", "--q-lr", "3e-4",
                                               "--v-lr", "2e-4"])
    assert (cfg.normalize_states, cfg.discount, cfg.critic_lr, cfg.value_lr) == (False, 0.9, 3e-4, 2e-4)
    err = capsys.readouterr().err
    for old, new in (("state-norm", "normalize-states"), ("gamma", "discount"), ("q-lr", "critic-lr"),
                     ("v-lr", "value-lr")):
        assert f"warning: --{old} is deprecated, use --{new}" in err
    assert U.UniO4Config.RENAMED == {k: v for k, v in OLD_NAMES.items() if k in ("state_norm", "gamma", "q_lr", "v_lr")}


def test_uni_o4_choices_come_from_the_types(capsys):
    with pytest.raises(SystemExit):
        configure(U.UniO4Config, None, ["--gate", "sometimes"])
    assert capsys.readouterr().err == "error: --gate: 'sometimes' is not one of amq, never\n"
    with pytest.raises(ValueError, match="--selection must be one of"):
        U.check_config(U.UniO4Config(selection="best"))  # a config built in code is checked as well


def test_uni_o4_stage_keys_survive_the_renames(monkeypatch):
    """The renamed fields hash under their old names (keys of CACHE_VERSION 2, written before the renames); later
    versions (3: o2o.nets.NETS_LAYOUT 2, 4: layout 3) give every stage a new key, so caches of an old layout are never
    loaded."""
    cfg = U.UniO4Config(dataset="local:hopper-medium")
    changed = dataclasses.replace(cfg, critic_lr=3e-4, normalize_states=False, discount=0.9)
    current = U.stage_keys(cfg)
    assert set(current.values()).isdisjoint(OLD_KEYS.values())
    monkeypatch.setattr(U, "CACHE_VERSION", 2)
    assert U.stage_keys(cfg) == OLD_KEYS
    assert U.stage_keys(changed) == OLD_KEYS_CHANGED


def test_uni_o4_online_phase_config_is_unchanged():
    """uni_o4.py hands run_ppo a PPOConfig with preset 'unio4' built from its own fields, as before."""
    cfg = configure(U.UniO4Config, U.presets, ["--dataset", "hopper-medium-v2"])
    p = U.ppo_config(cfg)
    assert (p.preset, p.discount, p.normalize_states, p.normalize_rewards, p.normalize_advantages, p.vf_coef) == \
        ("unio4", 0.99, False, False, True, 2.0)
    assert (p.actor_lr, p.epochs, p.minibatch_size, p.hidden, p.critic_hidden) == (2e-5, 10, 128, (256,) * 3,
                                                                                 (512,) * 3)


PPO_CASES = [(d, p) for datasets, p in PPO_UNIO4 for d in datasets]


@pytest.mark.parametrize("dataset,preset", PPO_CASES, ids=[d for d, _ in PPO_CASES])
def test_ppo_unio4_preset_resolves_as_before(dataset, preset):
    cfg = configure(ppo.PPOConfig, ppo.presets, ["--dataset", dataset, "--preset", "unio4"])
    expected = dataclasses.asdict(dataclasses.replace(ppo.PPOConfig(dataset=dataset), **renamed(preset)))
    assert dataclasses.asdict(cfg) == expected


def test_ppo_official_is_cleanrl_and_the_default(capsys):
    """configs/ppo/official/default.yaml states CleanRL's values field for field; they are the dataclass defaults,
    so `--preset official` (the default) resolves to PPOConfig() as `--preset cleanrl` did."""
    cfg = configure(ppo.PPOConfig, ppo.presets, ["--dataset", "walker2d-medium-v2"])
    assert cfg == ppo.PPOConfig(dataset="walker2d-medium-v2")
    assert (cfg.minibatch_size, cfg.clip, cfg.hidden, cfg.normalize_states, cfg.preset) == (64, 0.2, (64, 64), True,
                                                                                           "official")
    old = configure(ppo.PPOConfig, ppo.presets, ["--dataset", "walker2d-medium-v2", "--preset", "cleanrl",
                                                 "--gamma", "0.9", "--norm-obs", "false", "--total-steps", "512"])
    assert (old.discount, old.normalize_states, old.online_steps) == (0.9, False, 512)
    err = capsys.readouterr().err
    assert "warning: --preset cleanrl is deprecated, use --preset official" in err
    assert "warning: --norm-obs is deprecated, use --normalize-states" in err
    assert "warning: --total-steps is deprecated, use --online-steps" in err  # the name of Uni-O4's online phase
