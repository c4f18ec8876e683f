"""The pre-engine algorithm files (one seed per process), loaded from git for speed comparisons in one run.

`legacy_step(algo, obs_dim, act_dim, device)` returns a function doing one update of the file as it was at
LEGACY_COMMIT (the last commit before the engine): its own agent, its own update and its own buffer sampling
(uniform indices, one gather per field). The files come with the o2o/ package of the same commit, loaded as the
package `legacy_o2o` (their `from o2o...` / `from baselines...` imports rewritten to it), so they never depend on
today's o2o/. It needs the repository's git history; without it, `legacy_step` raises LegacyUnavailable and the
benchmarks print only today's numbers.
"""

from __future__ import annotations

import importlib
import io
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
LEGACY_COMMIT = "55a5163"  # main before the engine (o2o/loop.py, o2o/nets.py)
PACKAGE = "legacy_o2o"
TREES = ("o2o", "baselines", "algorithms")  # what the legacy files import, all from LEGACY_COMMIT
MODULES = {"iql": "baselines.iql", "awac": "baselines.awac", "cql": "baselines.cql", "famo2o": "algorithms.famo2o"}
IMPORT = re.compile(r"^(\s*from )(o2o|baselines|algorithms)\b", re.MULTILINE)


class LegacyUnavailable(RuntimeError):
    """The legacy files cannot be read (no git history)."""


def _load() -> None:
    """Extract TREES at LEGACY_COMMIT into a temporary package and put it on sys.path."""
    if PACKAGE in sys.modules:
        return
    res = subprocess.run(["git", "archive", LEGACY_COMMIT, *TREES], cwd=ROOT, capture_output=True)
    if res.returncode != 0:
        raise LegacyUnavailable(f"git archive {LEGACY_COMMIT}: {res.stderr.decode().strip() or 'failed'}")
    root = Path(tempfile.mkdtemp(prefix="o2o-legacy-")) / PACKAGE
    root.mkdir()
    (root / "__init__.py").write_text("")
    with tarfile.open(fileobj=io.BytesIO(res.stdout)) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(".py"):
                text = tar.extractfile(member).read().decode()
                path = root / member.name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(IMPORT.sub(rf"\1{PACKAGE}.\2", text))
    sys.path.insert(0, str(root.parent))
    importlib.import_module(PACKAGE)


def legacy_step(algo: str, obs_dim: int, act_dim: int, device: torch.device,
                data: tuple[torch.Tensor, ...], batch_size: int = 256) -> Callable[[], dict[str, torch.Tensor]]:
    """One update of the pre-engine `algo` (iql, awac, cql, famo2o) on uniform batches of `data` (s, a, r, s', d)."""
    _load()
    mod = importlib.import_module(f"{PACKAGE}.{MODULES[algo]}")
    n = len(data[0])

    def batch() -> tuple[torch.Tensor, ...]:
        idx = torch.randint(0, n, (batch_size,), device=device)
        return tuple(x[idx] for x in data)

    torch.manual_seed(0)
    if algo == "iql":
        cfg = mod.IQLConfig()
        agent = mod.make_agent(obs_dim, act_dim, cfg, device)
        return lambda: mod.update(agent, batch(), cfg)
    if algo == "awac":
        cfg = mod.AWACConfig()
        agent = mod.make_agent(obs_dim, act_dim, cfg, device)
        return lambda: mod.update(agent, batch(), cfg)
    if algo == "cql":
        agent = mod.CQL(obs_dim, act_dim, mod.CQLConfig(), device=device)
        return lambda: agent.update(batch())
    if algo == "famo2o":
        agent = mod.FamO2O(mod.FamO2OConfig(), obs_dim, act_dim, device)
        return lambda: agent.update(batch(), False)
    raise ValueError(f"no legacy file for {algo!r}")
