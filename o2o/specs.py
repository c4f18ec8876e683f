"""Any dataset name -> its DatasetSpec: a registered D4RL name, `local:<env>-<quality>` or a `minari:<id>`.

D4RL and local names come from the registry's tables (o2o/registry.py); a Minari spec is read from the local copy of
the dataset (o2o/minari_source.py). Nothing is downloaded here; a dataset file needs its env (`--env`).
"""

from __future__ import annotations

import difflib

from o2o.dataset import DatasetError
from o2o.minari_source import minari_spec
from o2o.registry import REGISTRY, DatasetSpec, is_file_name, local_spec


def get_spec(name: str) -> DatasetSpec:
    """Spec of a registered D4RL name, a 'local:' name or a 'minari:' id; a clear KeyError otherwise (a file path
    asks for --env).

    A Minari spec is read from the local copy of the dataset (`o2o.minari_source.minari_spec`); nothing is
    downloaded here.
    """
    if name.startswith("local:"):
        return local_spec(name)
    if name.startswith("minari:"):
        try:
            return minari_spec(name.split(":", 1)[1])
        except DatasetError as e:
            raise KeyError(str(e)) from None
    if name in REGISTRY:
        return REGISTRY[name]
    if is_file_name(name):
        raise KeyError(f"{name}: a dataset file needs its evaluation environment: add --env <gymnasium id>")
    close = difflib.get_close_matches(name, REGISTRY, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else " Run `python -m o2o.data list` for all names."
    raise KeyError(f"unknown dataset {name!r}.{hint}")
