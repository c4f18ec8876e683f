"""A device-resident replay buffer seeded with an offline dataset and grown online (no host sync to sample)."""

from __future__ import annotations

import numpy as np
import torch

from o2o.data import Dataset

FIELDS = ("obs", "act", "rew", "next_obs", "done")  # a transition's tensors, in add()'s order


class ReplayBuffer:
    """Transitions (s, a, r, s', done) as device tensors; uniform sampling with torch.randint on the device."""

    def __init__(self, obs_dim: int, act_dim: int, capacity: int, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.capacity = int(capacity)
        z = lambda *s: torch.zeros(self.capacity, *s, dtype=torch.float32, device=self.device)  # noqa: E731
        self.obs, self.act, self.rew, self.next_obs, self.done = z(obs_dim), z(act_dim), z(), z(obs_dim), z()
        self.size = 0
        self.ptr = 0

    @classmethod
    def from_dataset(cls, ds: Dataset, obs: np.ndarray, next_obs: np.ndarray, rewards: np.ndarray,
                     actions: np.ndarray | None = None, capacity: int | None = None,
                     device: torch.device | str = "cpu") -> ReplayBuffer:
        """A buffer holding the (already transformed) dataset, with room for `capacity` transitions in all."""
        n = len(ds)
        buf = cls(ds.obs_dim, ds.act_dim, max(capacity or n, n), device)
        buf.add(obs, ds.actions if actions is None else actions, rewards, next_obs, ds.terminals.astype(np.float32))
        return buf

    def add(self, obs: np.ndarray, act: np.ndarray, rew: np.ndarray, next_obs: np.ndarray, done: np.ndarray) -> None:
        """Append a batch of transitions (ring buffer once full)."""
        data = [np.asarray(x, dtype=np.float32) for x in (obs, act, rew, next_obs, done)]
        n = len(data[2].reshape(-1))
        idx = (self.ptr + np.arange(n)) % self.capacity
        t_idx = torch.as_tensor(idx, device=self.device)
        for dst, src in zip((self.obs, self.act, self.rew, self.next_obs, self.done), data):
            dst[t_idx] = torch.as_tensor(src.reshape(n, *dst.shape[1:]), device=self.device)
        self.ptr = int((self.ptr + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """A uniform batch (s, a, r, s', done) of device tensors."""
        idx = torch.randint(0, self.size, (batch_size,), device=self.device, generator=generator)
        return self.obs[idx], self.act[idx], self.rew[idx], self.next_obs[idx], self.done[idx]

    def rows_since(self, start: int) -> dict[str, torch.Tensor]:
        """Rows start..size-1 as CPU copies (e.g. the online transitions past the dataset, for a checkpoint).

        Copies, not slices: torch.save of a slice would write the whole underlying storage.
        """
        return {k: getattr(self, k)[start:self.size].cpu().clone() for k in FIELDS}

    def add_rows(self, rows: dict[str, torch.Tensor]) -> None:
        """Append rows saved by rows_since (nothing when they are empty)."""
        if len(rows["rew"]):
            self.add(*(rows[k].numpy() for k in FIELDS))

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        """Everything needed to resume (weights_only-loadable)."""
        return {**self.rows_since(0), "ptr": self.ptr, "size": self.size}

    def load_state_dict(self, state: dict[str, torch.Tensor | int]) -> None:
        """Restore a state_dict() into this buffer."""
        n = int(state["size"])
        for name in FIELDS:
            getattr(self, name)[:n] = state[name].to(self.device)  # type: ignore[union-attr]
        self.size, self.ptr = n, int(state["ptr"])
