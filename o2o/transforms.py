"""Data transforms chosen per algorithm: state normalisation, reward transforms per domain, action clipping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from o2o.dataset import Dataset


@dataclass(frozen=True)
class ObsNormalizer:
    """z-score with dataset statistics, applied to the dataset and to the env's observations at evaluation."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, ds: Dataset, eps: float = 1e-3) -> ObsNormalizer:
        """Mean and std (+eps, CORL's convention) of the dataset's observations."""
        return cls(ds.observations.mean(0).astype(np.float32), (ds.observations.std(0) + eps).astype(np.float32))

    @classmethod
    def identity(cls, dim: int) -> ObsNormalizer:
        """A normaliser that changes nothing."""
        return cls(np.zeros(dim, np.float32), np.ones(dim, np.float32))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return ((obs - self.mean) / self.std).astype(np.float32)


@dataclass(frozen=True)
class RewardTransform:
    """r' = scale · r + bias, the same offline and online."""

    scale: float = 1.0
    bias: float = 0.0

    def __call__(self, r: np.ndarray | float) -> np.ndarray | float:
        return r * self.scale + self.bias


RewardKind = Literal["none", "locomotion", "antmaze", "cql_antmaze", "unio4_antmaze"]  # reward_transform's kinds


def reward_transform(ds: Dataset, kind: str) -> RewardTransform:
    """Reward transform by name: none | locomotion | antmaze (r − 1) | cql_antmaze (10 r − 5) | unio4_antmaze."""
    if kind == "none":
        return RewardTransform()
    if kind == "locomotion":
        # IQL/CORL: r · 1000 / (max episode return − min episode return), episodes split on terminals and timeouts.
        rets = ds.episode_returns()
        spread = float(rets.max() - rets.min())
        return RewardTransform(scale=1000.0 / spread if spread > 0 else 1.0)
    if kind == "antmaze":
        return RewardTransform(1.0, -1.0)
    if kind in ("cql_antmaze", "unio4_antmaze"):
        return RewardTransform(10.0, -5.0)
    raise ValueError(f"unknown reward transform {kind!r}")


def default_reward_kind(domain: str) -> str:
    """IQL/AWAC convention: locomotion scaling, AntMaze r − 1, none for Adroit and Kitchen."""
    return {"locomotion": "locomotion", "antmaze": "antmaze"}.get(domain, "none")


def clip_actions(actions: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Clip to ±(1 − eps) so that log-likelihoods under tanh-bounded policies stay finite."""
    return np.clip(actions, -1.0 + eps, 1.0 - eps)
