"""The in-memory dataset: `Dataset`, `DatasetError`, and `from_arrays`, which validates D4RL-layout arrays into one.

Transition semantics (documented in the README, "Datasets"):
- A file *with* `next_observations` keeps every transition; `timeouts` mark truncated episode ends (no terminal).
- A file *without* them gets next_observations exactly as `d4rl.qlearning_dataset` builds them: s'_i = s_{i+1};
  a transition whose `timeouts[i]` is set is dropped (its s_{i+1} starts the next episode), and so is the file's
  last transition. Files without `timeouts` end an episode every `max_episode_steps` steps, as d4rl does.
- `terminals` are true environment terminations (no bootstrap); `timeouts` are truncations (bootstrap);
  `episode_ends` marks the last kept transition of every episode (terminal, timeout or end of data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from o2o.registry import DatasetSpec

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
# How far (as a fraction of the action box's half-width) an action may lie outside the env's bounds: float rounding
# of data clipped to the bounds passes, anything beyond would make tanh-policy log-likelihoods meaningless.
ACTION_TOLERANCE = 1e-3


class DatasetError(ValueError):
    """A dataset that cannot be used: the message names the file and the problem."""


@dataclass
class Dataset:
    """A typed in-memory offline dataset of N transitions."""

    observations: np.ndarray  # (N, obs_dim) float32
    actions: np.ndarray  # (N, act_dim) float32
    rewards: np.ndarray  # (N,) float32
    next_observations: np.ndarray  # (N, obs_dim) float32
    terminals: np.ndarray  # (N,) bool: true terminations
    timeouts: np.ndarray  # (N,) bool: truncations (time limit)
    episode_ends: np.ndarray  # (N,) bool: last transition of each episode
    spec: DatasetSpec
    metadata: dict[str, Any] = field(default_factory=dict)
    infos: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. infos/qpos, infos/qvel, aligned with rows

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def obs_dim(self) -> int:
        """Observation dimension."""
        return self.observations.shape[1]

    @property
    def act_dim(self) -> int:
        """Action dimension."""
        return self.actions.shape[1]

    def episode_slices(self) -> list[slice]:
        """Slices of consecutive transitions, one per episode."""
        ends = np.flatnonzero(self.episode_ends) + 1
        starts = np.concatenate([[0], ends[:-1]])
        return [slice(int(s), int(e)) for s, e in zip(starts, ends)]

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode."""
        ends = np.flatnonzero(self.episode_ends)
        csum = np.concatenate([[0.0], np.cumsum(self.rewards, dtype=np.float64)])
        starts = np.concatenate([[0], ends[:-1] + 1])
        return csum[ends + 1] - csum[starts]

    def next_actions(self) -> np.ndarray:
        """a_{t+1} within an episode (SARSA targets); the episode's last action repeats at its end."""
        nxt = np.empty_like(self.actions)
        nxt[:-1] = self.actions[1:]
        nxt[-1] = self.actions[-1]
        last = self.episode_ends
        nxt[last] = self.actions[last]
        return nxt

    def mc_returns(self, gamma: float) -> np.ndarray:
        """Discounted Monte-Carlo return-to-go of every transition within its episode."""
        out = np.zeros(len(self), dtype=np.float64)
        acc = 0.0
        for i in range(len(self) - 1, -1, -1):
            if self.episode_ends[i]:
                acc = 0.0
            acc = float(self.rewards[i]) + gamma * acc
            out[i] = acc
        return out.astype(np.float32)

    def subset(self, idx: np.ndarray) -> Dataset:
        """A dataset of the rows `idx` (boolean mask or indices); episode ends are kept as flags."""
        infos = {k: v[idx] for k, v in self.infos.items()}
        return Dataset(
            self.observations[idx], self.actions[idx], self.rewards[idx], self.next_observations[idx],
            self.terminals[idx], self.timeouts[idx], self.episode_ends[idx], self.spec, dict(self.metadata), infos,
        )


def _fail(origin: Any, msg: str) -> DatasetError:
    """A DatasetError whose message starts with the data's origin (a file, an id or '<arrays>')."""
    return DatasetError(f"{origin}: {msg}")


def _numeric(origin: Any, key: str, arr: np.ndarray) -> np.ndarray:
    """`arr` unchanged if it holds numbers (bool, int or float); DatasetError naming `key` otherwise."""
    if arr.dtype.kind not in "biuf":
        raise _fail(origin, f"{key} must be numeric, but its dtype is {arr.dtype}")
    return arr


def _flags(origin: Any, key: str, arr: np.ndarray) -> np.ndarray:
    """A terminals/timeouts array as bool; DatasetError unless it is boolean or holds only 0 and 1 (NaN is neither)."""
    arr = _numeric(origin, key, np.asarray(arr)).reshape(-1)
    if arr.dtype.kind == "b":
        return arr
    bad = ~((arr == 0) | (arr == 1))
    if bad.any():
        raise _fail(origin, f"{key} must be boolean or 0/1, but {int(bad.sum())} value(s) are not "
                            f"(first: {arr[bad][0].item()!r} at row {int(np.flatnonzero(bad)[0])})")
    return arr.astype(bool)


def _check_action_bounds(origin: Any, act: np.ndarray, spec: DatasetSpec) -> None:
    """DatasetError when an action lies outside the env's action bounds by more than ACTION_TOLERANCE."""
    low, high = spec.action_bounds
    slack = ACTION_TOLERANCE * (high - low) / 2 if np.isfinite(high - low) else 0.0
    out = (act < low - slack) | (act > high + slack)
    if out.any():
        raise _fail(origin, f"{int(out.sum())} action value(s) lie outside the action bounds [{low:g}, {high:g}] of "
                            f"{spec.env_id} (seen [{float(act.min()):.4g}, {float(act.max()):.4g}], "
                            f"tolerance {slack:g})")


def from_arrays(raw: dict[str, np.ndarray], spec: DatasetSpec, origin: str = "<arrays>") -> Dataset:
    """Build a validated Dataset from D4RL-layout arrays (keys as in the HDF5 file)."""
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise _fail(origin, f"missing key(s) {', '.join(missing)} (a D4RL file has {', '.join(REQUIRED_KEYS)})")
    obs = _numeric(origin, "observations", np.asarray(raw["observations"]))
    act = _numeric(origin, "actions", np.asarray(raw["actions"]))
    rew = _numeric(origin, "rewards", np.asarray(raw["rewards"])).reshape(-1)
    term = _flags(origin, "terminals", raw["terminals"])
    n = len(rew)
    if n == 0:
        raise _fail(origin, "the dataset is empty")
    if obs.ndim != 2 or act.ndim != 2:
        raise _fail(origin, f"observations and actions must be 2-D, got shapes {obs.shape} and {act.shape}")
    tout = _flags(origin, "timeouts", raw["timeouts"]) if "timeouts" in raw else None
    for key, arr in (("observations", obs), ("actions", act), ("terminals", term), ("timeouts", tout)):
        if arr is not None and len(arr) != n:
            raise _fail(origin, f"length mismatch: {key} has {len(arr)} rows, rewards has {n}")
    if obs.shape[1] != spec.obs_dim:
        raise _fail(origin, f"observation dim {obs.shape[1]} does not match {spec.env_id} ({spec.obs_dim})")
    if act.shape[1] != spec.act_dim:
        raise _fail(origin, f"action dim {act.shape[1]} does not match {spec.env_id} ({spec.act_dim})")
    nxt = raw.get("next_observations")
    if nxt is not None:
        nxt = _numeric(origin, "next_observations", np.asarray(nxt))
        if nxt.shape != obs.shape:
            raise _fail(origin, f"next_observations shape {nxt.shape} != observations shape {obs.shape}")
    for key, arr in (("observations", obs), ("actions", act), ("rewards", rew), ("next_observations", nxt)):
        if arr is not None and not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise _fail(origin, f"{key} holds {bad} NaN/inf value(s)")
    _check_action_bounds(origin, act, spec)
    infos = {k: np.asarray(v) for k, v in raw.items() if k.startswith("infos/") and len(np.asarray(v)) == n}

    if nxt is not None:
        keep = np.ones(n, dtype=bool)
        timeouts = tout if tout is not None else np.zeros(n, dtype=bool)
        ends = term | timeouts
    else:
        # d4rl.qlearning_dataset: s' = s_{i+1}; drop timeout transitions and the last one.
        if tout is None:
            step = np.zeros(n, dtype=np.int64)
            # episode_step resets after a terminal or after max_episode_steps - 1 (d4rl's final_timestep)
            tout = np.zeros(n, dtype=bool)
            k = 0
            for i in range(n):
                step[i] = k
                final = k == spec.max_episode_steps - 1
                tout[i] = final
                k = 0 if (final or term[i]) else k + 1
        keep = ~tout
        keep[-1] = False
        nxt = np.empty_like(obs)
        nxt[:-1] = obs[1:]
        nxt[-1] = obs[-1]
        # an episode is truncated after the last kept transition before a dropped timeout
        timeouts = np.zeros(n, dtype=bool)
        timeouts[:-1] = tout[1:] & keep[:-1] & ~term[:-1]
        ends = term | timeouts
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        raise _fail(origin, "no usable transitions after dropping timeouts")
    ends = ends[idx].copy()
    ends[-1] = True
    ds = Dataset(
        observations=obs[idx].astype(np.float32),
        actions=act[idx].astype(np.float32),
        rewards=rew[idx].astype(np.float32),
        next_observations=nxt[idx].astype(np.float32),
        terminals=term[idx],
        timeouts=timeouts[idx],
        episode_ends=ends,
        spec=spec,
        metadata={"name": spec.name, "env_id": spec.env_id, "origin": str(origin), "raw_transitions": n},
        infos={k: v[idx] for k, v in infos.items()},
    )
    meta = {k.split("/", 1)[1]: v.tolist() for k, v in raw.items() if k.startswith("attrs/")}
    meta.update({k: _scalar(v) for k, v in raw.items() if k.startswith("metadata/")})
    ds.metadata.update(meta)
    return ds


def _scalar(v: np.ndarray) -> Any:
    """A metadata value as plain Python (bytes decoded to str)."""
    v = np.asarray(v)
    if v.dtype.kind in "SO":
        return v.tolist().decode() if isinstance(v.tolist(), bytes) else str(v.tolist())
    return v.tolist()

