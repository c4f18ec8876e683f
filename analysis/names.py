"""Canonical names the analysis groups by: algorithm spellings and dataset domains.

Both the run records (analysis.collect) and the published tables (analysis.published) are keyed by these, so they
live here, below both: neither module imports the other.
"""

from __future__ import annotations

import re

# Spellings of algorithm names seen in run records and papers, mapped to the canonical names the tables use.
_ALIASES = {
    "iql": "IQL",
    "cql": "CQL",
    "awac": "AWAC",
    "bc": "BC",
    "td3bc": "TD3+BC",
    "bppo": "BPPO",
    "unio4": "Uni-O4",
    "famo2o": "FamO2O",
    "ppo": "PPO",
    "awacfamo2o": "AWAC+FamO2O",
    "iqlfamo2o": "IQL+FamO2O",
    "famo2oawac": "AWAC+FamO2O",
    "famo2oiql": "IQL+FamO2O",
}


def canonical_algorithm(name: str) -> str:
    """Canonical spelling of an algorithm name ('iql' -> 'IQL', 'td3_bc' -> 'TD3+BC'); unknown names unchanged."""
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    return _ALIASES.get(key, str(name))


def domain_of(dataset: str) -> str:
    """Domain (locomotion, antmaze, adroit, kitchen) of a dataset name; 'other' when the name is not known."""
    from o2o import registry
    from o2o.specs import get_spec

    try:  # the name alone (no Minari dataset opened), then the registry
        return registry.DOMAIN_OF_FAMILY[registry.family_of(str(dataset))]
    except (KeyError, ValueError, IndexError):
        pass
    try:
        return get_spec(str(dataset)).domain
    except (KeyError, ValueError, IndexError):
        return "other"
