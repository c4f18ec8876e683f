"""Install: the extras of pyproject.toml and requirements.lock, the constraints file `make setup` installs with.

The lock pins every package of the core and of every extra, torch excepted (installed first, CPU or CUDA build).
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = ("dev", "ray", "tensorboard", "wandb")
UNPINNED = {"torch", "pip", "setuptools", "wheel"}  # torch: chosen at install; the others: the venv's own installers


def lock() -> dict[str, str]:
    """Canonical name -> pinned version of requirements.lock (comments skipped; every other line `name==version`)."""
    out: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version and name == name.strip(), f"not an exact pin: {line!r}"
        assert canonicalize_name(name) not in out, f"pinned twice: {name}"
        out[canonicalize_name(name)] = version
    return out


def direct_requirements() -> list[Requirement]:
    """The core dependencies and those of every extra (the `all` extra's reference to the project itself left out)."""
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for items in PROJECT["optional-dependencies"].values():
        reqs += [Requirement(r) for r in items if canonicalize_name(Requirement(r).name) != "o2o-bench"]
    return reqs


def test_optional_things_are_extras_and_all_is_every_one():
    extras = PROJECT["optional-dependencies"]
    assert set(extras) == {*EXTRAS, "all"}
    assert extras["all"] == [f"o2o-bench[{','.join(EXTRAS)}]"]
    core = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
    assert not core & {"ray", "tensorboard", "wandb", "pytest", "ruff", "tox"}  # none in the default install
    assert {canonicalize_name(Requirement(r).name) for r in extras["dev"]} >= {"pytest", "ruff"}  # `make test`


def test_lock_pins_every_direct_requirement_within_its_range():
    pins = lock()
    assert "torch" not in pins  # the build (CPU or CUDA) is the user's choice, installed before the lock
    for req in direct_requirements():
        name = canonicalize_name(req.name)
        if name == "torch":
            continue
        assert name in pins, f"{req} is not pinned in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req}: the lock pins {pins[name]}"


def test_lock_is_closed_over_the_dependencies_of_what_it_pins():
    """Every dependency of a locked package (as installed here at the locked version) is locked too, with the
    extras its dependents ask for: a new pin that brings a new package fails here rather than installing it unpinned."""
    pins = lock()
    wanted: dict[str, set[str]] = {}
    todo = [(canonicalize_name(r.name), set(r.extras)) for r in direct_requirements()]
    checked = 0
    while todo:
        name, extras = todo.pop()
        if name in UNPINNED or (name in wanted and extras <= wanted[name]):
            continue
        wanted[name] = wanted.get(name, set()) | extras
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an extra not installed in this environment (CI installs all of them)
        if dist.version != pins.get(name, dist.version):
            continue  # this environment differs from the lock here: nothing to read its dependencies from
        checked += 1
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in wanted[name] | {""}):
                continue
            dep = canonicalize_name(req.name)
            assert dep in UNPINNED or dep in pins, f"{name} {dist.version} needs {req}, which requirements.lock lacks"
            todo.append((dep, set(req.extras)))
    assert checked > 20  # the walk read the installed packages' metadata
