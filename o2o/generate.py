"""Datasets the project makes itself, in D4RL's exact HDF5 layout: rollouts of a policy in an env.

`local:<env>-<quality>` datasets (env: hopper, halfcheetah, walker2d) come from committed PPO behaviour policies
(`behaviour/`, trained by `python -m behaviour.train ENV`), mirroring how D4RL made its v2 datasets:
- random: a randomly initialised policy network (stochastic actions), 1M transitions;
- medium / expert: stochastic rollouts of the "medium" (≈ 1/3 of the expert's return) and final policies, 1M each;
- medium-replay: every transition the training run collected until the medium snapshot (D4RL: SAC's replay buffer
  up to medium). The committed source is compact: the executed actions and their log-probs of each training env plus
  the reset seed; the states are re-derived by replaying the actions in the (deterministic) MuJoCo env;
- medium-expert: medium ⊕ expert (concatenated, 2M).
Every file holds infos/qpos, infos/qvel, infos/action_log_probs and metadata/* (behaviour return, normalized, seed,
generator version). The same seed gives the same file.

Command line: `python -m o2o.generate all [--size N] [--force] | one local:NAME | table`. The policies are rolled out
from their files (NumpyGaussianPolicy), so nothing here needs the PPO that trained them.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from o2o.consistency import logged_state
from o2o.envs import make_env
from o2o.hdf5 import read_hdf5, write_d4rl_hdf5
from o2o.registry import LOCAL_FAMILIES, LOCAL_QUALITIES, DatasetSpec, normalized_score
from o2o.specs import get_spec

GENERATOR_VERSION = "1"
BEHAVIOUR_DIR = Path(__file__).resolve().parent.parent / "behaviour"
D4RL_SIZE = 1_000_000
PROGRESS = 100_000  # a progress line every this many transitions
# per-quality offset of the rollout seed, so that medium and expert do not start from the same states
QUALITY_SEED = {"random": 0, "medium": 1, "expert": 2, "medium-replay": 3}
RANDOM_HIDDEN = (64, 64)  # hidden layers of the random policy (PPO's GaussianActor default)
Policy = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def data_dir() -> Path:
    """Where local datasets live: `$O2O_DATA_DIR`, default ~/.o2o/datasets."""
    return Path(os.environ.get("O2O_DATA_DIR", "~/.o2o/datasets")).expanduser()


def rollout(spec: DatasetSpec, policy: Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]],
            n_transitions: int, seed: int = 0, progress: int = 0) -> dict[str, np.ndarray]:
    """Roll out `policy(obs, rng) -> (action, log_prob)` for n transitions, recording D4RL's keys and infos.

    progress: print a line every `progress` transitions (0: quiet).
    """
    t0 = time.time()
    env = make_env(spec)
    rng = np.random.default_rng(seed)
    n = int(n_transitions)
    low, high = env.action_space.low, env.action_space.high
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    obs, _ = env.reset(seed=seed)
    state = logged_state(env, spec.domain)  # qpos, qvel (+ Adroit's targets) as D4RL logs them, in D4RL's frame
    out = {
        "observations": np.empty((n, obs_dim), np.float32), "actions": np.empty((n, act_dim), np.float32),
        "rewards": np.empty(n, np.float32), "next_observations": np.empty((n, obs_dim), np.float32),
        "terminals": np.zeros(n, bool), "timeouts": np.zeros(n, bool),
        **{f"infos/{k}": np.empty((n, *np.shape(v)), np.float64) for k, v in state.items()},
        "infos/action_log_probs": np.empty(n, np.float32),
    }
    episode = 0
    for i in range(n):
        for k, v in logged_state(env, spec.domain).items():
            out[f"infos/{k}"][i] = v
        act, logp = policy(obs[None].astype(np.float32), rng)
        act = np.clip(act[0], low, high)
        nobs, rew, term, trunc, _ = env.step(act)
        out["observations"][i] = obs
        out["actions"][i] = act
        out["rewards"][i] = rew
        out["next_observations"][i] = nobs
        out["terminals"][i] = term
        out["timeouts"][i] = trunc or (i == n - 1 and not term)
        out["infos/action_log_probs"][i] = np.asarray(logp).reshape(-1)[0]
        obs = nobs
        if term or trunc:
            episode += 1
            obs, _ = env.reset(seed=seed + 1000003 * episode)
        if progress and (i + 1) % progress == 0:
            rate = (i + 1) / max(time.time() - t0, 1e-9)
            print(f"  {spec.name}: {i + 1}/{n} transitions, {rate:.0f}/s, eta {(n - i - 1) / rate / 60:.1f} min",
                  flush=True)
    env.close()
    return out


# ----------------------------------------------------------------------------------------------- behaviour policies
class NumpyGaussianPolicy:
    """A behaviour policy file (a PPO GaussianActor's state dict + its observation normaliser) evaluated in numpy.

    Stochastic: a = mean(norm(s)) + σ·ε with ε ~ N(0, I) from the rollout's generator; log-prob of that sample
    (before the env's clipping to the action bounds, as the PPO that trained it). Deterministic with `act`.
    """

    def __init__(self, state: dict[str, Any]) -> None:
        sd = state["actor"]
        arch = state["arch"]
        n_layers = len(arch["hidden"]) + 1
        self.weights = [(sd[f"mean_net.{2 * i}.weight"].double().numpy().T,
                         sd[f"mean_net.{2 * i}.bias"].double().numpy()) for i in range(n_layers)]
        self.activation = np.tanh if arch["activation"] == "tanh" else (lambda x: np.maximum(x, 0.0))
        self.tanh_mean = bool(arch.get("tanh_mean", False))
        self.log_std = sd["log_std"].double().numpy()
        on = state["obs_norm"]
        self.mean, self.std = on["mean"].double().numpy(), on["std"].double().numpy()
        self.clip = float(on["clip"])

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic (mean) action of a batch of raw observations."""
        x = np.clip((np.asarray(obs, np.float64) - self.mean) / self.std, -self.clip, self.clip)
        for i, (w, b) in enumerate(self.weights):
            x = x @ w + b
            if i < len(self.weights) - 1:
                x = self.activation(x)
        return np.tanh(x) if self.tanh_mean else x

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        mu = self.act(obs)
        eps = rng.standard_normal(mu.shape)
        a = mu + np.exp(self.log_std) * eps
        logp = (-0.5 * eps**2 - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return a.astype(np.float32), logp.astype(np.float32)


def random_policy_state(spec: DatasetSpec, seed: int) -> dict[str, Any]:
    """A randomly initialised PPO actor on raw observations, in the layout of the committed policy files.

    CleanRL's initialisation (PPO's GaussianActor defaults): 64x64 tanh MLP, orthogonal weights with gain √2 (hidden)
    and 0.01 (output), zero biases, log σ = 0. The weights are drawn from a generator seeded with `seed` in the order
    in which constructing that actor drew them (each nn.Linear's own uniform init, then the orthogonal one over it),
    so they are bit-identical to those the `random` datasets were first made with (tests/test_generate.py).
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    dims = [spec.obs_dim, *RANDOM_HIDDEN, spec.act_dim]
    gains = [math.sqrt(2.0)] * len(RANDOM_HIDDEN) + [0.01]
    actor: dict[str, torch.Tensor] = {}
    for i, (fan_in, fan_out, gain) in enumerate(zip(dims[:-1], dims[1:], gains)):
        bound = 1.0 / math.sqrt(fan_in)
        weight = torch.empty(fan_out, fan_in).uniform_(-bound, bound, generator=gen)  # nn.Linear's draws (weight,
        torch.empty(fan_out).uniform_(-bound, bound, generator=gen)  # then bias), overwritten as CleanRL does
        torch.nn.init.orthogonal_(weight, gain, generator=gen)
        actor[f"mean_net.{2 * i}.weight"] = weight
        actor[f"mean_net.{2 * i}.bias"] = torch.zeros(fan_out)
    actor["log_std"] = torch.zeros(spec.act_dim)
    d = spec.obs_dim
    return {"actor": actor,
            "arch": {"obs_dim": d, "act_dim": spec.act_dim, "hidden": list(RANDOM_HIDDEN), "activation": "tanh",
                     "tanh_mean": False},
            "obs_norm": {"mean": torch.zeros(d, dtype=torch.float64), "std": torch.ones(d, dtype=torch.float64),
                         "clip": torch.tensor(math.inf)}}


def behaviour_path(family: str, which: str) -> Path:
    """behaviour/<family>-<which>.pt (which: medium | expert) or <family>-medium-replay.npz."""
    suffix = "npz" if which == "medium-replay" else "pt"
    return BEHAVIOUR_DIR / f"{family}-{which}.{suffix}"


def load_behaviour(family: str, which: str) -> dict[str, Any]:
    """A committed behaviour policy file (weights_only)."""
    import torch

    path = behaviour_path(family, which)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; train it with `python -m behaviour.train {family}` "
                                "(see behaviour/README.md)")
    return torch.load(path, map_location="cpu", weights_only=True)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def behaviour_id(family: str, quality: str, seed: int = 0) -> str:
    """What a dataset was generated from (stored as metadata/behaviour; a changed policy file means regenerate)."""
    if quality == "random":
        return f"random-init GaussianActor (torch seed {seed})"
    if quality == "medium-expert":
        return f"medium ⊕ expert: {behaviour_id(family, 'medium')}; {behaviour_id(family, 'expert')}"
    path = behaviour_path(family, quality)
    sha = _sha(path) if path.exists() else "missing"
    extra = " (PPO training rollouts up to medium)" if quality == "medium-replay" else ""
    return f"behaviour/{path.name} sha256:{sha}{extra}"


# ----------------------------------------------------------------------------------------------- medium-replay
def replay_actions(spec: DatasetSpec, actions: np.ndarray, log_probs: np.ndarray, reset_seed: int,
                   n_steps: int) -> dict[str, np.ndarray]:
    """Re-derive the training transitions of each env from its executed actions (the env is deterministic).

    actions: (steps, num_envs, act_dim) as executed (already clipped, float32); env i was reset with seed
    reset_seed + i once and then autoreset without a seed (gymnasium's vector env). The first `n_steps` steps of every
    env are replayed; episodes are ordered by the step they ended at (then env index), the last unfinished episode of
    every env ends with a timeout.
    """
    episodes: list[tuple[int, int, dict[str, list[Any]]]] = []
    n_envs = actions.shape[1]
    keys = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts",
            "infos/qpos", "infos/qvel", "infos/action_log_probs")
    for i in range(n_envs):
        env = make_env(spec)
        base = env.unwrapped
        obs, _ = env.reset(seed=reset_seed + i)
        cur: dict[str, list[Any]] = {k: [] for k in keys}
        for t in range(n_steps):
            qpos, qvel = base.data.qpos.copy(), base.data.qvel.copy()
            a = actions[t, i]
            nobs, rew, term, trunc, _ = env.step(a)
            cut = t == n_steps - 1
            for k, v in zip(keys, (obs, a, rew, nobs, term, trunc or (cut and not term), qpos, qvel,
                                   log_probs[t, i])):
                cur[k].append(v)
            obs = nobs
            if term or trunc or cut:
                episodes.append((t, i, cur))
                cur = {k: [] for k in keys}
                if not cut:
                    obs, _ = env.reset()
        env.close()
    episodes.sort(key=lambda e: (e[0], e[1]))
    out = {k: np.concatenate([np.asarray(ep[k]) for _, _, ep in episodes]) for k in keys}
    for k in ("observations", "actions", "next_observations", "rewards", "infos/action_log_probs"):
        out[k] = out[k].astype(np.float32)
    out["terminals"] = out["terminals"].astype(bool)
    out["timeouts"] = out["timeouts"].astype(bool)
    return out


# ----------------------------------------------------------------------------------------------- generation
def local_path(name: str, create: bool = True) -> Path:
    """data_dir()/<env>-<quality>.hdf5 of `local:<env>-<quality>`.

    With create: generated (default size, seed 0) on first use; a file made from a behaviour policy that has since
    changed (metadata/behaviour differs from the committed files' hash) is regenerated with its own size and seed.
    """
    spec = get_spec(name if name.startswith("local:") else f"local:{name}")
    path = data_dir() / f"{spec.name.split(':', 1)[1]}.hdf5"
    if not create:
        return path
    if not path.exists():
        print(f"[o2o.generate] {spec.name} not found in {data_dir()}: generating it (once; "
              "`python -m o2o.generate all` makes all 15)", file=sys.stderr, flush=True)
        generate(spec.name)
        return path
    meta = _read_meta(path)
    quality = spec.name.split(":", 1)[1].split("-", 1)[1]
    seed = int(meta.get("seed", 0))
    if "behaviour" in meta and meta["behaviour"] != behaviour_id(spec.family, quality, seed):
        print(f"[o2o.generate] {path} was made from a behaviour policy that has changed since: regenerating it",
              file=sys.stderr, flush=True)
        generate(spec.name, size=int(meta.get("requested_size", 0)) or None, seed=seed, force=True)
    return path


def _read_meta(path: Path) -> dict[str, Any]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "metadata" not in f:
                return {}
            out = {}
            for k, v in f["metadata"].items():
                x = v[()]
                out[k] = x.decode() if isinstance(x, bytes) else (x.item() if hasattr(x, "item") else x)
            return out
    except OSError:
        return {}


def _episode_returns(arr: dict[str, np.ndarray]) -> np.ndarray:
    """Returns of the episodes in the arrays (episodes end at terminals or timeouts)."""
    ends = np.flatnonzero(arr["terminals"] | arr["timeouts"])
    if len(ends) == 0 or ends[-1] != len(arr["rewards"]) - 1:
        ends = np.append(ends, len(arr["rewards"]) - 1)
    csum = np.concatenate([[0.0], np.cumsum(arr["rewards"], dtype=np.float64)])
    starts = np.concatenate([[0], ends[:-1] + 1])
    return csum[ends + 1] - csum[starts]


def _arrays(spec: DatasetSpec, quality: str, size: int | None, seed: int) -> tuple[dict[str, np.ndarray],
                                                                                   dict[str, Any]]:
    fam = spec.family
    info: dict[str, Any] = {"behaviour": behaviour_id(fam, quality, seed)}
    if quality == "random":
        n = size or D4RL_SIZE
        policy = NumpyGaussianPolicy(random_policy_state(spec, seed))
        return rollout(spec, policy, n, seed=seed * 10 + QUALITY_SEED[quality], progress=PROGRESS), info
    if quality in ("medium", "expert"):
        n = size or D4RL_SIZE
        state = load_behaviour(fam, quality)
        return rollout(spec, NumpyGaussianPolicy(state), n, seed=seed * 10 + QUALITY_SEED[quality],
                       progress=PROGRESS), info
    if quality == "medium-replay":
        src = behaviour_path(fam, "medium-replay")
        if not src.exists():
            raise FileNotFoundError(f"{src} is missing (see behaviour/README.md)")
        with np.load(src, allow_pickle=False) as z:
            actions, logp = z["actions"], z["log_probs"]
            reset_seed, steps_per_env = int(z["reset_seed"]), int(z["steps_per_env"])
        n_envs = actions.shape[1]
        if size is not None:  # the buffer as it was after `size` env steps (all envs), trimmed to size
            steps_per_env = min(steps_per_env, -(-size // n_envs))
        arr = replay_actions(spec, actions, logp, reset_seed, steps_per_env)
        if size is not None and size < len(arr["rewards"]):
            arr = {k: v[:size] for k, v in arr.items()}
            if not arr["terminals"][-1]:
                arr["timeouts"][-1] = True
        return arr, info
    if quality == "medium-expert":
        half = None if size is None else size // 2
        parts = []
        for q, n in (("medium", half), ("expert", None if size is None else size - half)):
            parts.append(_part(spec, q, n, seed))
        arr = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return arr, info
    raise KeyError(quality)


def _part(spec: DatasetSpec, quality: str, size: int | None, seed: int) -> dict[str, np.ndarray]:
    """medium or expert arrays: from their file when it was generated with the same size and seed, else in memory."""
    fam = spec.family
    path = data_dir() / f"{fam}-{quality}.hdf5"
    if path.exists() and _matches(_read_meta(path), size, seed, behaviour_id(fam, quality, seed)):
        raw = read_hdf5(path)
        return {k: v for k, v in raw.items() if not k.startswith(("metadata/", "attrs/"))}
    return _arrays(get_spec(f"local:{fam}-{quality}"), quality, size, seed)[0]


def _matches(meta: dict[str, Any], size: int | None, seed: int, behaviour: str) -> bool:
    """Whether a file's metadata says it was made with this size (None: default), seed, generator and behaviour."""
    return (meta.get("requested_size") == int(size or 0) and meta.get("seed") == seed
            and str(meta.get("generator_version")) == GENERATOR_VERSION and meta.get("behaviour") == behaviour)


def generate(name: str, size: int | None = None, seed: int = 0, force: bool = False) -> Path:
    """Make `local:<env>-<quality>` (D4RL layout) at local_path(name); kept when it exists with the same size/seed."""
    spec = get_spec(name if name.startswith("local:") else f"local:{name}")
    quality = spec.name.split(":", 1)[1].split("-", 1)[1]
    path = local_path(spec.name, create=False)
    if path.exists() and not force and _matches(_read_meta(path), size, seed,
                                                behaviour_id(spec.family, quality, seed)):
        return path
    t0 = time.time()
    arr, info = _arrays(spec, quality, size, seed)
    rets = _episode_returns(arr)
    ret_mean = float(np.mean(rets))
    from importlib import metadata as md

    meta = {
        "name": spec.name, "env_id": spec.env_id, "quality": quality, "seed": int(seed),
        "requested_size": int(size or 0), "size": int(len(arr["rewards"])),
        "generator_version": GENERATOR_VERSION, "behaviour": info["behaviour"],
        "behaviour_return": ret_mean, "behaviour_return_std": float(np.std(rets)),
        "behaviour_normalized": normalized_score(spec, ret_mean), "episodes": int(len(rets)),
        "mujoco": md.version("mujoco"), "gymnasium": md.version("gymnasium"),
    }
    write_d4rl_hdf5(path, arr, meta)
    print(f"[o2o.generate] {spec.name}: {len(arr['rewards'])} transitions, {len(rets)} episodes, return "
          f"{ret_mean:.1f} (normalized {meta['behaviour_normalized']:.1f}) in {time.time() - t0:.0f} s -> {path}",
          flush=True)
    return path


def behaviour_score(name: str) -> float | None:
    """Normalized score of the policy that collected a generated dataset, from its file's metadata.

    None for names that are not `local:` datasets, files not generated on this machine and files without it.
    """
    try:
        path = local_path(name, create=False)
    except (KeyError, ValueError, IndexError):
        return None
    if not str(name).startswith("local:") or not path.exists():
        return None
    value = _read_meta(path).get("behaviour_normalized")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


# ----------------------------------------------------------------------------------------------- command line
def markdown_table(names: list[str] | None = None) -> str:
    """Markdown table of the generated datasets' behaviour returns (from their metadata)."""
    rows = ["| dataset | transitions | episodes | return (mean ± std) | normalized | seed |",
            "|---|---:|---:|---:|---:|---:|"]
    for name in names or [f"local:{f}-{q}" for f in LOCAL_FAMILIES for q in LOCAL_QUALITIES]:
        path = local_path(name, create=False)
        if not path.exists():
            rows.append(f"| {name} | (not generated) | | | | |")
            continue
        m = _read_meta(path)
        rows.append(f"| {name} | {m.get('size')} | {m.get('episodes')} | {m.get('behaviour_return', 0):.1f} ± "
                    f"{m.get('behaviour_return_std', 0):.1f} | {m.get('behaviour_normalized', 0):.1f} | "
                    f"{m.get('seed')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m o2o.generate`."""
    p = argparse.ArgumentParser(prog="python -m o2o.generate", description="local:<env>-<quality> datasets")
    sub = p.add_subparsers(dest="cmd", required=True)
    pa = sub.add_parser("all", help="(re)generate all 15 local datasets")
    po = sub.add_parser("one", help="generate one dataset")
    po.add_argument("name")
    for q in (pa, po):
        q.add_argument("--size", type=int, default=None, help="transitions (default: D4RL's)")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--force", action="store_true", help="regenerate even when an identical file exists")
    pa.add_argument("--envs", default=",".join(LOCAL_FAMILIES))
    sub.add_parser("table", help="Markdown table of the behaviour returns of the generated datasets")
    args = p.parse_args(argv)
    if args.cmd == "one":
        print(generate(args.name, args.size, args.seed, args.force))
    elif args.cmd == "all":
        t_all = time.time()
        order = ("random", "medium", "expert", "medium-replay", "medium-expert")  # medium-expert reuses the files
        names = [f"local:{f}-{q}" for f in args.envs.split(",") for q in order]
        for k, name in enumerate(names, 1):
            t0 = time.time()
            print(f"[{k}/{len(names)}] {name} ...", flush=True)
            generate(name, args.size, args.seed, args.force)
            print(f"[{k}/{len(names)}] {name} done in {time.time() - t0:.0f} s (total {time.time() - t_all:.0f} s)",
                  flush=True)
        print(f"all {len(names)} datasets in {time.time() - t_all:.0f} s under {data_dir()}")
    elif args.cmd == "table":
        print(markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
