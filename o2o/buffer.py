"""The replay buffer of the training engine: one copy of the dataset on the device, each seed's online rows beside it.

All fields of a transition live in one float32 table of width 2·obs_dim + act_dim + 2 (s, a, r, s', done), so a
batch is one gather. Rows 0 … N − 1 hold the (transformed) dataset, shared by every seed; seed s's online rows
follow at N + s·C … (C = online capacity per seed). Seed s samples uniformly from its own virtual buffer
[dataset ⊕ its online rows], with indices drawn from its own stream (o2o.rng.MemberRNG), so a seed samples the
same batches whether it trains alone or packed. `buffer_size` > 0 keeps only the newest `buffer_size` transitions
of that virtual buffer (a FIFO ring, oldest dataset rows dropped first). The counts live on the device, so
sampling never syncs with the host and its shapes never change (torch.compile / CUDA graphs friendly).
"""

from __future__ import annotations

import numpy as np
import torch

from o2o.rng import MemberRNG

FIELDS = ("obs", "act", "rew", "next_obs", "done")  # a transition's parts, in the table's column order


class ReplayBuffer:
    """Dataset rows shared by S seeds plus each seed's online rows; `sample` gives (S, B, ...) batches."""

    def __init__(self, dataset: dict[str, np.ndarray], members: int, online_capacity: int,
                 device: torch.device | str = "cpu", buffer_size: int = 0) -> None:
        self.device = torch.device(device)
        self.members, self.capacity = int(members), int(online_capacity)
        self.obs_dim, self.act_dim = dataset["obs"].shape[1], dataset["act"].shape[1]
        self.widths = (self.obs_dim, self.act_dim, 1, self.obs_dim, 1)
        self.n_data = len(dataset["rew"])
        self.buffer_size = int(buffer_size)
        table = torch.zeros(self.n_data + self.members * self.capacity, sum(self.widths), device=self.device)
        table[:self.n_data] = torch.as_tensor(self.rows(*(dataset[k] for k in FIELDS)), device=self.device)
        self.table = table
        self.n_online = 0  # online rows per seed (the same for every seed: one env step each per loop step)
        self._lo = torch.zeros((), dtype=torch.int64, device=self.device)  # first valid virtual index
        self._count = torch.full((), self.n_data, dtype=torch.int64, device=self.device)  # valid virtual rows
        self._offset = (torch.arange(self.members, device=self.device) * self.capacity).unsqueeze(1)
        self._set_counts()

    def rows(self, obs: np.ndarray, act: np.ndarray, rew: np.ndarray, next_obs: np.ndarray,
             done: np.ndarray) -> np.ndarray:
        """Transitions as table rows (n, width), float32."""
        n = len(np.reshape(rew, -1))
        parts = [np.asarray(x, np.float32).reshape(n, w) for x, w in zip((obs, act, rew, next_obs, done), self.widths)]
        return np.concatenate(parts, 1)

    def _set_counts(self) -> None:
        total = self.n_data + self.n_online
        lo = max(0, total - self.buffer_size) if self.buffer_size > 0 else 0
        self._lo.fill_(lo)
        self._count.fill_(total - lo)

    def add(self, rows: np.ndarray | torch.Tensor) -> None:
        """Append one transition per seed: rows (S, width) from `rows()`."""
        if self.n_online >= self.capacity:
            raise ValueError(f"the online buffer holds {self.capacity} transitions per seed; it is full")
        idx = self.n_data + self._offset[:, 0] + self.n_online
        self.table[idx] = torch.as_tensor(rows, dtype=torch.float32, device=self.device)
        self.n_online += 1
        self._set_counts()

    def sample(self, rng: MemberRNG, batch_size: int) -> tuple[torch.Tensor, ...]:
        """A uniform batch per seed from its own stream: (obs, act, rew, next_obs, done), each (S, B, ...)."""
        v = self._lo + rng.bits(batch_size) % self._count  # virtual index in [lo, n_data + n_online)
        idx = torch.where(v < self.n_data, v, v + self._offset)
        batch = self.table[idx.reshape(-1)].view(self.members, batch_size, -1)
        obs, act, rew, next_obs, done = batch.split(self.widths, dim=-1)
        return obs, act, rew.squeeze(-1), next_obs, done.squeeze(-1)

    def online_rows(self, member: int) -> torch.Tensor:
        """Seed `member`'s online rows as a CPU copy (for its checkpoint; a copy, not a view of the table)."""
        start = self.n_data + member * self.capacity
        return self.table[start:start + self.n_online].cpu().clone()

    def load_online_rows(self, rows: list[torch.Tensor]) -> None:
        """Restore every seed's online rows (online_rows of each, all of one length)."""
        n = {len(r) for r in rows}
        if len(n) != 1:
            raise ValueError(f"seeds hold different numbers of online rows: {sorted(n)}")
        self.n_online = n.pop()
        for s, r in enumerate(rows):
            start = self.n_data + s * self.capacity
            self.table[start:start + self.n_online] = r.to(self.device)
        self._set_counts()
