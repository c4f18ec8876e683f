"""Registry of every D4RL dataset of the four domains: URL, evaluation env, reference returns, known file content.

Also the names of the Minari ids and `local:` datasets of those domains. `o2o.specs.get_spec` turns any dataset name
into its DatasetSpec.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

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


# Action box of every registered family's evaluation env: gymnasium's Hopper-v5, HalfCheetah-v5, Walker2d-v4, Ant-v4,
# AntMaze_*-v5, AdroitHand*-v1 and FrankaKitchen-v1 all declare Box(-1, 1) (tests/test_data.py, test_domains.py); D4RL's
# generation scripts clip the locomotion, AntMaze and Adroit actions to [-1, 1].
ACTION_BOUNDS = (-1.0, 1.0)

# (bytes, sha256) of D4RL's files as TensorFlow Datasets recorded them when downloading the same URLs
# (tensorflow_datasets/d4rl/*/checksums.tsv). Not recorded there, so not checked: ant_maze_v2's medium-play file,
# relocate-*-v1 and kitchen. D4RL itself documents no transition or episode counts for its v1/v2 files (its paper's
# table describes v0), so those are not checked; observation and action dims are (FAMILY_DIMS).
KNOWN_FILES: dict[str, tuple[int, str]] = {
    "hopper_random-v2.hdf5": (152525345, "63103ef7059db4c0819bd054f4e83ff339030b50bcdb46bdbe50385f234b5054"),
    "hopper_medium-v2.hdf5": (152756557, "5bdf1bc4a713c82941de44633df669b36c89850b652a25985166796d25cf71a0"),
    "hopper_medium_replay-v2.hdf5": (75854457, "e121c5f7c9857a307baa9edc6a2c3b48e85fedb9ac316ecddd0f48ca7ef4e39b"),
    "hopper_medium_expert-v2.hdf5": (304537315, "9d51ad87f8c905be3880d84c6140bcdb7fbf39a19e046a237f238ba34fec9e26"),
    "hopper_expert-v2.hdf5": (152427435, "01aa219a5f8eea5e639eccdc636ec2bf40e317159a95cf4bf6e985f16909941b"),
    "hopper_full_replay-v2.hdf5": (187998921, "56baf95963c51c1e964049a974566c50ba80f289390565523e60c0ba83e0982e"),
    "halfcheetah_random-v2.hdf5": (237338037, "25407aef85b5d16c0f36b4149341edb4acc6a9e88c1db529b2de19e7464874ba"),
    "halfcheetah_medium-v2.hdf5": (237727262, "41324e8487a9556d8cfa4538827f8937f4d63dae3030825ebc9f3a726ed08ca0"),
    "halfcheetah_medium_replay-v2.hdf5": (59448533,
                                          "48d494a4770c11f48260736dec090b78bdca8375647ed4d24bfa5b6610c7f683"),
    "halfcheetah_medium_expert-v2.hdf5": (474567252,
                                          "015db75dae5bbe8e94029b71fa0bafc2073365df0c94744e71031189f3f79c06"),
    "halfcheetah_expert-v2.hdf5": (237464597, "d9fe53bb994eb1e20a99b4fa3412cd76a1bb7966a7ff55e0fcbdd6081bd2965f"),
    "halfcheetah_full_replay-v2.hdf5": (291381762, "27fdf7ea86e5a2cbd24d611ae9e703c86ec2e8e52823abc69dd9af6afb3a36c0"),
    "walker2d_random-v2.hdf5": (216109364, "4e863bb6090cf4a461548bd470564b32f1ae5b32ef3085f816b2ede7f092e7fa"),
    "walker2d_medium-v2.hdf5": (232254996, "cf00f43add04c17fdfc2958dd581dea0851b2e5bedbe6fda073758a8f841aeda"),
    "walker2d_medium_replay-v2.hdf5": (86323963, "e75de96a4f77acf7d4e0d6fdf0d7ccb177c26c44bb4388e4fd99f543ccfa18db"),
    "walker2d_medium_expert-v2.hdf5": (462197079, "6b8d7f868c45bbaedf460be797fb7271b46dee6ebe45fe7a64319f2005b59a04"),
    "walker2d_expert-v2.hdf5": (230567195, "2985dc3d436a8baa10e8f43f946fe1d7c6337a4e4fbc65def70618093b18c59a"),
    "walker2d_full_replay-v2.hdf5": (285115514, "f2720f9d27b2acef6ec9a7d9ad3b80b6c2078ad4467cee668a81e3b3c80bcf2a"),
    "ant_random-v2.hdf5": (384466831, "93cc10893eed2b8e17f81d1aa51dc23d27c5ca101a3804249f6bd038c6f06055"),
    "ant_medium-v2.hdf5": (376239825, "461c03b9f70f40d66b47608a92965e4ef3642bd9cdb1320d10acc92754167137"),
    "ant_medium_replay-v2.hdf5": (136482252, "844c4e5743ef51091f2106a3570b257fb149032c4743f8a5f02f40adc3b42a46"),
    "ant_medium_expert-v2.hdf5": (748335217, "8cfb64e62d8944b5d9dada5f0cfc13a295fafe0c6ba58b778e32ebf16c95aef1"),
    "ant_expert-v2.hdf5": (373231677, "fa22531ca79ea051006fa48bb652120d2e12c813919c530369a03c2688311b0f"),
    "ant_full_replay-v2.hdf5": (449390167, "b95b0a7f34b1d5d1bedfded0f8e9cfc508b59de83cd4cbfb65b18dbd5056f26c"),
    "Ant_maze_u-maze_noisy_multistart_False_multigoal_False_sparse.hdf5": (
        232533093, "188838316eab5882fa0e1dc8398b5e79772f64f27f0b78d6aebe838402a720c6"),
    "Ant_maze_u-maze_noisy_multistart_True_multigoal_True_sparse.hdf5": (
        230854793, "4aff7f77b97a8dd62e513cac8f57da7cdb458cfac7ac0cec3081b7765f2da59d"),
    "Ant_maze_big-maze_noisy_multistart_True_multigoal_False_sparse.hdf5": (
        231110993, "527385c14b87892e8c222c43246546d6cd461fa2a5476d0b3b105ae422b7637c"),
    "Ant_maze_big-maze_noisy_multistart_True_multigoal_True_sparse.hdf5": (
        231095454, "b77764cac90c23e09905539c49ceb3949b49c5b39eb9d51788cc64b9dd0a2c0d"),
    "Ant_maze_hardest-maze_noisy_multistart_True_multigoal_False_sparse.hdf5": (
        230880846, "e37afef5b80b968b30cad2682f9a93ee1b400e3b58c7a7f45e7d425d03a2b03d"),
    "Ant_maze_hardest-maze_noisy_multistart_True_multigoal_True_sparse.hdf5": (
        231183929, "dda7acbdde1a94a14aa7b06a7e5d8141e60a03ccdc4578bff34b0444425bf11d"),
    "Ant_maze_u-maze_noisy_multistart_False_multigoal_False_sparse_fixed.hdf5": (
        232532949, "5ef15257771c50ef4d23c7de001750e96c8bb5d9b6a5e4a821dcfb3065fbd130"),
    "Ant_maze_u-maze_noisy_multistart_True_multigoal_True_sparse_fixed.hdf5": (
        230854272, "c771dd63963cd7d9f55f24a6d809064f6b82250a6aeac4c9d13f9a1d06e8c932"),
    "Ant_maze_big-maze_noisy_multistart_True_multigoal_True_sparse_fixed.hdf5": (
        231095166, "ad9dcbac05d1f8744a7a216083f513662f43f64f28a4a5eb225e9811902dfae7"),
    "Ant_maze_hardest-maze_noisy_multistart_True_multigoal_False_sparse_fixed.hdf5": (
        230880653, "6d353df2457829925d7f9d4b0215587469908bd57478ea76f16417cfa944f471"),
    "Ant_maze_hardest-maze_noisy_multistart_True_multigoal_True_sparse_fixed.hdf5": (
        231183710, "84f775eb7956ea9cc766704710dc520a8ab357adc7522ade47f556f0e335e284"),
    "pen-human-v1.hdf5": (2040573, "209e345b2150b633f30a11612612c60f49e941f127ce6c4dc0cd790501c46f9f"),
    "pen-cloned-v1.hdf5": (155074191, "6d1a982cee1950501bedebbddedbcbb377e6284d379986c83abac8a6c0be0c22"),
    "pen-expert-v1.hdf5": (262040663, "3791b8ca6a802061770af2977c051ac3ae261488210ce73788760a5b8308f374"),
    "door-human-v1.hdf5": (3121206, "f9691288c3ddf2b4e7b31bdae0d8444b80ba035515495f8a902d60c43ee09370"),
    "door-cloned-v1.hdf5": (294356136, "1f6a60ecc4d2a2e5c02f41dd3412be61bb265a33dcf120ceee9e9682d4fe4d48"),
    "door-expert-v1.hdf5": (536056678, "66df4cd4e0a1e0b72ea72653ce088e29ecbfa99bac3cd2b52e64092e9a0aaab4"),
    "hammer-human-v1.hdf5": (5606475, "3e42f3f49b5c92a901601dfe867c6c62a9651cbe79f6760ec8b402a15816a498"),
    "hammer-cloned-v1.hdf5": (446616879, "e48d75b159bdd72f51d3f01448d3eca4d38275714e11e995c14a36f6cf159db3"),
    "hammer-expert-v1.hdf5": (557047483, "1c069a0f6e4852493023c77dc3b3a12d8d5ac2e3a034827fea3ab8a161e7185f"),
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
    action_bounds: tuple[float, float] = ACTION_BOUNDS  # every action component lies in [low, high]
    file_size: int | None = None  # bytes of the D4RL file, where known (KNOWN_FILES)
    sha256: str | None = None  # hex sha256 of the D4RL file, where known (KNOWN_FILES)
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
    size, sha = KNOWN_FILES.get(url.rsplit("/", 1)[-1], (None, None)) if url else (None, None)
    fields = dict(
        name=name, family=family, domain=DOMAIN_OF_FAMILY[family], env_id=GYM_ENV_OF_FAMILY[family],
        url=url, ref_min=lo, ref_max=hi, obs_dim=obs_dim, act_dim=act_dim, max_episode_steps=steps,
        source=source, file_size=size, sha256=sha,
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


def is_file_name(name: str) -> bool:
    """Whether a dataset name is a file path (a separator, a suffix or an existing file), not a name or `minari:` id."""
    if name.startswith(("local:", "minari:")):
        return False
    return "/" in name or os.sep in name or bool(Path(name).suffix) or Path(name).exists()


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
