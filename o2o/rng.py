"""Random numbers with one independent stream per member (seed): counter-based, so packing never changes them.

Every random draw of training (batch indices, action noise, dropout masks, CQL's sampled actions) comes from a
`MemberRNG`. Member s's numbers are a hash of (its seed, the stream name, a draw counter, the element index):
they do not depend on which other seeds share the process, nor on the device (CPU and CUDA give the same numbers),
and the whole state is two small integer tensors, so a draw is an ordinary tensor op that torch.compile and CUDA
graphs capture (no torch.Generator objects, no host sync).

The hash is the PCG-RXS-M-XS 32-bit output permutation (Jarzynski & Olano, "Hash Functions for GPU Rendering",
JCGT 2020), computed in int64 with every product below 2⁶³. Element i of draw c of member s is
h(h(i) ⊕ h(key_s ⊕ (c·φ mod 2³²))) with key_s = hash(seed_s, stream) and φ = 2654435761 (h(i) cached per size).
Resolution: uniforms have 24 bits, normals come from two
uniforms by Box-Muller, `randint(n)` is `bits mod n` (bias below n / 2³², i.e. < 0.05 % for n ≤ 2M).
Initialisation uses per-member `torch.Generator`s instead (`member_generators`): it runs once, on the CPU.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch

M32 = 0xFFFFFFFF
GOLDEN = 2654435761  # ⌊2³² / φ⌋, odd: c ↦ c·GOLDEN mod 2³² spreads consecutive draw counters over 32 bits


def stream_key(seed: int, stream: str) -> int:
    """A 32-bit key for (seed, stream name), stable across processes and versions (sha256, not Python's hash)."""
    digest = hashlib.sha256(f"{int(seed)}/{stream}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def pcg_hash(x: torch.Tensor) -> torch.Tensor:
    """PCG-RXS-M-XS permutation of 32-bit values held in an int64 tensor (values in [0, 2³²))."""
    state = (x * 747796405 + 2891336453) & M32
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) & M32
    return (word >> 22) ^ word


def member_generators(seeds: Sequence[int], stream: str) -> list[torch.Generator]:
    """One CPU torch.Generator per member, seeded from (seed, stream): for initialising that member's weights."""
    return [torch.Generator().manual_seed(stream_key(s, stream)) for s in seeds]


class MemberRNG:
    """Independent random streams for S members; every draw returns a tensor with a leading member axis (S, ...)."""

    def __init__(self, seeds: Sequence[int], stream: str, device: torch.device | str = "cpu") -> None:
        self.seeds = [int(s) for s in seeds]
        self.stream = stream
        self.key = torch.tensor([stream_key(s, stream) for s in self.seeds], dtype=torch.int64, device=device)
        self.counter = torch.zeros(len(self.seeds), dtype=torch.int64, device=device)
        self._index_hash: dict[int, torch.Tensor] = {}  # h(i) for i < n, per draw size n

    @property
    def members(self) -> int:
        """S, the number of streams."""
        return len(self.seeds)

    def bits(self, *shape: int) -> torch.Tensor:
        """Uniform 32-bit integers (as int64), shape (S, *shape); advances the draw counter by one."""
        self.counter.add_(1)
        base = pcg_hash(self.key ^ ((self.counter * GOLDEN) & M32))
        n = math.prod(shape)
        idx = None if torch.compiler.is_compiling() else self._index_hash.get(n)  # compiled: folded into the graph
        if idx is None:
            idx = pcg_hash(torch.arange(n, dtype=torch.int64, device=self.key.device))
            if not torch.compiler.is_compiling():
                self._index_hash[n] = idx
        return pcg_hash(idx.unsqueeze(0) ^ base.unsqueeze(1)).view(len(self.seeds), *shape)

    def rand(self, *shape: int) -> torch.Tensor:
        """Uniform float32 in [0, 1), shape (S, *shape)."""
        return (self.bits(*shape) >> 8).to(torch.float32) * (2.0 ** -24)

    def uniform(self, low: float, high: float, *shape: int) -> torch.Tensor:
        """Uniform float32 in [low, high), shape (S, *shape)."""
        return low + (high - low) * self.rand(*shape)

    def randn(self, *shape: int) -> torch.Tensor:
        """Standard normal float32 by Box-Muller, shape (S, *shape)."""
        u = self.rand(2, *shape)
        radius = torch.sqrt(-2.0 * torch.log1p(-u[:, 0]))  # 1 − u ∈ (0, 1]
        return radius * torch.cos((2.0 * math.pi) * u[:, 1])

    def randint(self, high: int, *shape: int) -> torch.Tensor:
        """Integers in [0, high), shape (S, *shape)."""
        return self.bits(*shape) % int(high)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Keys and counters, one entry per member (the member axis leads, as in every agent state)."""
        return {"key": self.key.clone(), "counter": self.counter.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore state_dict()."""
        self.key.copy_(state["key"])
        self.counter.copy_(state["counter"])
