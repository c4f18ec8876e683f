"""Registry of every D4RL dataset of the four domains: URL, evaluation env, reference returns."""

from __future__ import annotations

from dataclasses import dataclass, replace

D4RL_BASE = "http://rail.eecs.berkeley.edu/datasets/offline_rl"

# Reference returns of d4rl/infos.py (REF_MIN_SCORE, REF_MAX_SCORE); normalized = 100 (R - min) / (max - min).
REF_SCORES: dict[str, tuple[float, float]] = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "antmaze": (0.0, 1.0),
    "pen": (96.262799, 3076.8331017826877),
    "door": (-56.512833, 2880.5693087298737),
    "hammer": (-274.856578, 12794.134825156867),
    "relocate": (-6.425911, 4233.877797728884),
    "kitchen": (0.0, 4.0),
}

# (observation dim, action dim, max episode steps) of each family as D4RL stores it.
FAMILY_DIMS: dict[str, tuple[int, int, int]] = {
    "halfcheetah": (17, 6, 1000),
    "hopper": (11, 3, 1000),
    "walker2d": (17, 6, 1000),
    "ant": (111, 8, 1000),
    "antmaze": (29, 8, 1000),
    "pen": (45, 24, 100),
    "door": (39, 28, 200),
    "hammer": (46, 26, 200),
    "relocate": (39, 30, 200),
    "kitchen": (60, 9, 280),
}

DOMAIN_OF_FAMILY = {
    "halfcheetah": "locomotion",
    "hopper": "locomotion",
    "walker2d": "locomotion",
    "ant": "locomotion",
    "antmaze": "antmaze",
    "pen": "adroit",
    "door": "adroit",
    "hammer": "adroit",
    "relocate": "adroit",
    "kitchen": "kitchen",
}

# Gymnasium environment each family is evaluated in (see README, "Environments", for why v4 or v5).
GYM_ENV_OF_FAMILY = {
    "halfcheetah": "HalfCheetah-v5",
    "hopper": "Hopper-v5",
    "walker2d": "Walker2d-v4",
    "ant": "Ant-v4",
    "antmaze": "AntMaze_UMaze-v5",  # the maze itself is chosen by the antmaze adapter
    "pen": "AdroitHandPen-v1",
    "door": "AdroitHandDoor-v1",
    "hammer": "AdroitHandHammer-v1",
    "relocate": "AdroitHandRelocate-v1",
    "kitchen": "FrankaKitchen-v1",
}


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its name, where it comes from and how it is evaluated."""

    name: str
    family: str
    domain: str
    env_id: str
    url: str | None
    ref_min: float
    ref_max: float
    obs_dim: int
    act_dim: int
    max_episode_steps: int
    source: str = "d4rl"  # d4rl | local | minari | file
    ref_source: str = "d4rl"  # where ref_min/ref_max come from: d4rl (d4rl/infos.py) | minari (dataset metadata)
    env_spec: str | None = None  # gymnasium EnvSpec (JSON) of the evaluation env, for Minari datasets

    @property
    def filename(self) -> str | None:
        """File name in the d4rl cache (d4rl keeps the URL's last component)."""
        return self.url.rsplit("/", 1)[-1] if self.url else None

    @property
    def has_success(self) -> bool:
        """Whether the domain reports a success rate."""
        return self.domain in ("antmaze", "adroit", "kitchen")


def _spec(name: str, family: str, url: str | None, source: str = "d4rl", **kw) -> DatasetSpec:
    obs_dim, act_dim, steps = FAMILY_DIMS[family]
    lo, hi = REF_SCORES[family]
    fields = dict(
        name=name, family=family, domain=DOMAIN_OF_FAMILY[family], env_id=GYM_ENV_OF_FAMILY[family],
        url=url, ref_min=lo, ref_max=hi, obs_dim=obs_dim, act_dim=act_dim, max_episode_steps=steps,
        source=source,
    )
    fields.update(kw)
    return DatasetSpec(**fields)


def _build() -> dict[str, DatasetSpec]:
    reg: dict[str, DatasetSpec] = {}
    for fam in ("hopper", "halfcheetah", "walker2d", "ant"):
        for q in ("random", "medium", "medium-replay", "medium-expert", "expert", "full-replay"):
            name = f"{fam}-{q}-v2"
            url = f"{D4RL_BASE}/gym_mujoco_v2/{fam}_{q.replace('-', '_')}-v2.hdf5"
            reg[name] = _spec(name, fam, url)
    mazes = {
        "umaze": ("u-maze", False, False),
        "umaze-diverse": ("u-maze", True, True),
        "medium-play": ("big-maze", True, False),
        "medium-diverse": ("big-maze", True, True),
        "large-play": ("hardest-maze", True, False),
        "large-diverse": ("hardest-maze", True, True),
    }
    for key, (maze, multistart, multigoal) in mazes.items():
        stem = f"Ant_maze_{maze}_noisy_multistart_{multistart}_multigoal_{multigoal}_sparse"
        steps = 700 if maze == "u-maze" else 1000
        reg[f"antmaze-{key}-v0"] = _spec(
            f"antmaze-{key}-v0", "antmaze", f"{D4RL_BASE}/ant_maze_new/{stem}.hdf5", max_episode_steps=steps
        )
        reg[f"antmaze-{key}-v2"] = _spec(
            f"antmaze-{key}-v2", "antmaze", f"{D4RL_BASE}/ant_maze_v2/{stem}_fixed.hdf5", max_episode_steps=steps
        )
    for fam in ("pen", "door", "hammer", "relocate"):
        for q in ("human", "cloned", "expert"):
            name = f"{fam}-{q}-v1"
            reg[name] = _spec(name, fam, f"{D4RL_BASE}/hand_dapg_v1/{name}.hdf5")
    kitchen = {
        "complete": "mini_kitchen_microwave_kettle_light_slider-v0.hdf5",
        "partial": "kitchen_microwave_kettle_light_slider-v0.hdf5",
        "mixed": "kitchen_microwave_kettle_bottomburner_light-v0.hdf5",
    }
    for key, fname in kitchen.items():
        reg[f"kitchen-{key}-v0"] = _spec(f"kitchen-{key}-v0", "kitchen", f"{D4RL_BASE}/kitchen/{fname}")
    return reg


REGISTRY: dict[str, DatasetSpec] = _build()


def _build_minari() -> dict[str, str]:
    """Minari ids of the four domains -> the gymnasium env Minari collected them in (shown by `list`).

    The env a run evaluates in is read from the dataset itself (its eval env spec, else its env spec), not from here.
    """
    ids: dict[str, str] = {}
    for fam, env in (("hopper", "Hopper-v5"), ("halfcheetah", "HalfCheetah-v5"), ("walker2d", "Walker2d-v5"),
                     ("ant", "Ant-v5")):
        for q in ("simple", "medium", "expert"):
            ids[f"mujoco/{fam}/{q}-v0"] = env
    mazes = {"umaze": "AntMaze_UMaze-v4", "umaze-diverse": "AntMaze_UMaze-v4", "medium-play": "AntMaze_Medium-v4",
             "medium-diverse": "AntMaze_Medium_Diverse_GR-v4", "large-play": "AntMaze_Large-v4",
             "large-diverse": "AntMaze_Large_Diverse_GR-v4"}
    for maze, env in mazes.items():
        ids[f"D4RL/antmaze/{maze}-v1"] = env
    for fam in ("pen", "door", "hammer", "relocate"):
        for q in ("human", "cloned", "expert"):
            ids[f"D4RL/{fam}/{q}-v2"] = f"AdroitHand{fam.capitalize()}-v1"
    for q in ("complete", "partial", "mixed"):
        ids[f"D4RL/kitchen/{q}-v2"] = "FrankaKitchen-v1"
    return ids


# Every Minari dataset of the four domains; use them as `minari:<id>`.
MINARI_DATASETS: dict[str, str] = _build_minari()

LOCAL_FAMILIES = ("hopper", "halfcheetah", "walker2d")
LOCAL_QUALITIES = ("random", "medium", "medium-replay", "medium-expert", "expert")


def family_of(name: str) -> str:
    """Family (hopper, antmaze, pen, ...) of 'hopper-medium-v2', 'local:hopper-medium' or 'minari:D4RL/pen/human-v2'.

    A Minari id's family is its env_name part, the one before the last '/' (`<namespace>/<env_name>/<name>-v<N>`).
    """
    stem = name.split(":", 1)[-1]
    if name.startswith("minari:"):
        parts = stem.split("/")
        fam = parts[-2] if len(parts) > 1 else ""
    else:
        fam = stem.split("-", 1)[0]
    if fam not in FAMILY_DIMS:
        raise KeyError(f"unknown dataset family {fam!r} in {name!r}; known: {', '.join(FAMILY_DIMS)}")
    return fam


def local_spec(name: str) -> DatasetSpec:
    """Spec of a locally generated dataset 'local:<env>-<quality>' (D4RL reference returns of its family)."""
    stem = name.split(":", 1)[1]
    fam, _, quality = stem.partition("-")
    if fam not in LOCAL_FAMILIES or quality not in LOCAL_QUALITIES:
        raise KeyError(
            f"unknown local dataset {name!r}; use local:<{'|'.join(LOCAL_FAMILIES)}>-<{'|'.join(LOCAL_QUALITIES)}>"
        )
    return _spec(name, fam, None, source="local")


def get_spec(name: str) -> DatasetSpec:
    """Spec of a registered D4RL name, a 'local:' name or a 'minari:' id; a clear KeyError otherwise.

    A Minari spec is read from the local copy of the dataset (`o2o.data.minari_spec`); nothing is downloaded here.
    """
    if name.startswith("local:"):
        return local_spec(name)
    if name.startswith("minari:"):
        from o2o.data import DatasetError, minari_spec

        try:
            return minari_spec(name.split(":", 1)[1])
        except DatasetError as e:
            raise KeyError(str(e)) from None
    if name in REGISTRY:
        return REGISTRY[name]
    import difflib

    close = difflib.get_close_matches(name, REGISTRY, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else " Run `python -m o2o.data list` for all names."
    raise KeyError(f"unknown dataset {name!r}.{hint}")


def spec_for_env(name: str, env_id: str, family: str | None = None) -> DatasetSpec:
    """Spec for a bring-your-own file evaluated in gymnasium env `env_id` (family guessed from the id)."""
    fam = family
    if fam is None:
        low = env_id.lower()
        for cand in ("halfcheetah", "hopper", "walker2d", "antmaze", "ant", "pen", "door", "hammer", "relocate",
                     "kitchen"):
            if cand in low:
                fam = cand
                break
    if fam is None:
        raise KeyError(f"cannot tell the family of env {env_id!r}; no reference scores for it")
    return replace(_spec(name, fam, None, source="file"), env_id=env_id)


def score_reference(spec: DatasetSpec) -> dict[str, float | str]:
    """The reference returns a score is normalised with, and their source (what run records keep)."""
    return {"source": spec.ref_source, "ref_min": spec.ref_min, "ref_max": spec.ref_max}


def normalized_score(spec: DatasetSpec, ret: float) -> float:
    """D4RL normalized score ×100: 100 (R − ref_min) / (ref_max − ref_min)."""
    return 100.0 * (ret - spec.ref_min) / (spec.ref_max - spec.ref_min)
