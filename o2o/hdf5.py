"""D4RL-layout HDF5 files: read one into numpy, check one quickly, write one atomically.

The layout is D4RL's: top-level `observations`, `actions`, `rewards`, `terminals` (and optionally `timeouts`,
`next_observations`), `infos/*` aligned with the rows, `metadata/*` scalars and file attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from o2o.dataset import REQUIRED_KEYS, DatasetError
from o2o.records import staged_path
from o2o.registry import DatasetSpec


def _fail(path: Any, msg: str) -> DatasetError:
    """A DatasetError whose message starts with the file's path."""
    return DatasetError(f"{path}: {msg}")


def read_hdf5(path: str | Path) -> dict[str, np.ndarray]:
    """Read every dataset of a D4RL-layout HDF5 file into numpy, with a clear error when it is corrupt."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise _fail(path, "file does not exist")
    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset):
                    out[name] = obj[()]
            f.visititems(visit)
            out.update({f"attrs/{k}": np.asarray(v) for k, v in f.attrs.items()})
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise _fail(path, f"not a readable HDF5 file (truncated or corrupt?): {e}") from None
    return out


def check_hdf5(path: str | Path, spec: DatasetSpec | None = None) -> None:
    """Raise DatasetError unless the file is a readable D4RL-layout HDF5 file (and, given `spec`, of its dims).

    Reads shapes and each array's last row only (a truncated file fails there), not the data: a quick check of a
    download or a cached file before it is trusted.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in REQUIRED_KEYS if not isinstance(f.get(k), h5py.Dataset)]
            if missing:
                raise _fail(path, f"missing key(s) {', '.join(missing)} (a D4RL file has {', '.join(REQUIRED_KEYS)})")
            rows = {k: f[k].shape[0] if f[k].shape else 0 for k in (*REQUIRED_KEYS, "timeouts") if k in f}
            if len(set(rows.values())) != 1:
                raise _fail(path, f"length mismatch: {', '.join(f'{k} has {n} rows' for k, n in rows.items())}")
            for k in rows:
                if rows[k]:
                    f[k][-1]
            obs, act = f["observations"].shape, f["actions"].shape
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        if isinstance(e, DatasetError):
            raise
        raise _fail(path, f"not a readable HDF5 file (truncated or corrupt?): {e}") from None
    if spec is not None and (obs[1:] != (spec.obs_dim,) or act[1:] != (spec.act_dim,)):
        raise _fail(path, f"observations {obs} and actions {act} do not have {spec.name}'s dims "
                          f"({spec.obs_dim} and {spec.act_dim})")


def write_d4rl_hdf5(path: str | Path, arrays: dict[str, np.ndarray], metadata: dict[str, Any] | None = None) -> Path:
    """Write arrays (keys like 'observations', 'infos/qpos') and metadata ('metadata/...') atomically."""
    import h5py

    path = Path(path)
    with staged_path(path) as tmp, h5py.File(tmp, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v, compression="gzip" if np.asarray(v).size > 10000 else None)
        for k, v in (metadata or {}).items():
            f.create_dataset(f"metadata/{k}", data=v)
    return path

