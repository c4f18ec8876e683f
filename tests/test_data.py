"""Registry, loader semantics (next_observations, timeouts), bad inputs, and the `python -m o2o.data` CLI."""

from __future__ import annotations

import dataclasses
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest

from o2o import data
from o2o.data import load_dataset, load_file
from o2o.dataset import DatasetError, from_arrays
from o2o.hdf5 import write_d4rl_hdf5
from o2o.registry import REGISTRY, normalized_score
from o2o.specs import get_spec


def test_registry_covers_the_four_domains():
    domains = [s.domain for s in REGISTRY.values()]
    assert domains.count("locomotion") == 24  # 4 envs x 6 qualities
    assert domains.count("antmaze") == 12  # 6 mazes x v0, v2
    assert domains.count("adroit") == 12
    assert domains.count("kitchen") == 3
    assert get_spec("antmaze-umaze-v2").max_episode_steps == 700
    assert get_spec("antmaze-large-play-v0").max_episode_steps == 1000
    assert get_spec("pen-human-v1").obs_dim == 45 and get_spec("door-cloned-v1").act_dim == 28
    assert get_spec("kitchen-mixed-v0").obs_dim == 60
    assert get_spec("ant-medium-v2").obs_dim == 111


@pytest.mark.parametrize("name,ret,expected", [
    ("hopper-medium-v2", 3234.3, 100.0), ("hopper-medium-v2", -20.272305, 0.0),
    ("halfcheetah-expert-v2", 12135.0, 100.0), ("walker2d-random-v2", 1.629008, 0.0),
    ("pen-human-v1", (96.262799 + 3076.8331017826877) / 2, 50.0), ("antmaze-umaze-v2", 0.5, 50.0),
    ("kitchen-partial-v0", 3.0, 75.0), ("relocate-expert-v1", 4233.877797728884, 100.0),
])
def test_reference_scores(name, ret, expected):
    assert normalized_score(get_spec(name), ret) == pytest.approx(expected, abs=1e-9)


def test_unknown_name_suggests():
    with pytest.raises(KeyError, match="hopper-medium-v2"):
        get_spec("hoper-medium-v2")
    with pytest.raises(KeyError, match="unknown local dataset"):
        get_spec("local:hopper-superb")


def _spec():
    return get_spec("hopper-medium-v2")


def _raw(n=6, obs_dim=11, act_dim=3):
    obs = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, obs_dim), np.float32)
    return {"observations": obs, "actions": np.zeros((n, act_dim), np.float32),
            "rewards": np.arange(n, dtype=np.float32), "terminals": np.zeros(n, bool)}


def test_next_observations_hand_worked_qlearning_semantics():
    # Episode A: rows 0-2, terminates at 2. Episode B: rows 3-4, row 4 is a timeout. Row 5: start of episode C.
    raw = _raw()
    raw["terminals"] = np.array([0, 0, 1, 0, 0, 0], bool)
    raw["timeouts"] = np.array([0, 0, 0, 0, 1, 0], bool)
    ds = from_arrays(raw, _spec())
    # d4rl.qlearning_dataset: s'_i = s_{i+1}; row 4 (timeout) and row 5 (last row) are dropped.
    assert ds.observations[:, 0].tolist() == [0, 1, 2, 3]
    assert ds.next_observations[:, 0].tolist() == [1, 2, 3, 4]
    assert ds.rewards.tolist() == [0, 1, 2, 3]
    assert ds.terminals.tolist() == [False, False, True, False]
    assert ds.timeouts.tolist() == [False, False, False, True]  # episode B truncated after row 3
    assert ds.episode_ends.tolist() == [False, False, True, True]
    assert ds.episode_returns().tolist() == [3.0, 3.0]
    assert ds.metadata["raw_transitions"] == 6


def test_next_observations_without_timeouts_uses_max_episode_steps():
    spec = dataclasses.replace(_spec(), max_episode_steps=3)
    raw = _raw(7)  # episodes of 3 steps: rows 0-2, 3-5, 6; d4rl's final_timestep is step 2 of each
    ds = from_arrays(raw, spec)
    assert ds.observations[:, 0].tolist() == [0, 1, 3, 4]
    assert ds.next_observations[:, 0].tolist() == [1, 2, 4, 5]
    assert ds.episode_ends.tolist() == [False, True, False, True]


def test_file_with_next_observations_keeps_every_transition():
    raw = _raw()
    raw["next_observations"] = raw["observations"] + 100
    raw["timeouts"] = np.array([0, 0, 1, 0, 0, 1], bool)
    ds = from_arrays(raw, _spec())
    assert len(ds) == 6
    assert ds.next_observations[:, 0].tolist() == [100, 101, 102, 103, 104, 105]
    assert ds.episode_ends.tolist() == [False, False, True, False, False, True]
    assert not ds.terminals.any()


def test_next_actions_and_mc_returns_stay_within_episodes():
    raw = _raw()
    raw["actions"] = np.arange(6, dtype=np.float32)[:, None].repeat(3, 1) / 8  # within the action bounds [-1, 1]
    raw["next_observations"] = raw["observations"] + 1
    raw["terminals"] = np.array([0, 1, 0, 0, 0, 1], bool)
    ds = from_arrays(raw, _spec())
    assert (ds.next_actions()[:, 0] * 8).tolist() == [1, 1, 3, 4, 5, 5]
    np.testing.assert_allclose(ds.mc_returns(0.5), [0 + 0.5 * 1, 1, 2 + 0.5 * 3 + 0.25 * 4 + 0.125 * 5,
                                                    3 + 0.5 * 4 + 0.25 * 5, 4 + 0.5 * 5, 5])


@pytest.mark.parametrize("mutate,match", [
    (lambda r: r.pop("actions"), "missing key"),
    (lambda r: r.__setitem__("rewards", r["rewards"][:-1]), "length mismatch"),
    (lambda r: r["observations"].__setitem__((2, 1), np.nan), "NaN"),
    (lambda r: r["actions"].__setitem__((0, 0), np.inf), "NaN/inf"),
    (lambda r: r.__setitem__("observations", np.zeros((6, 17), np.float32)), "observation dim 17"),
    (lambda r: r.__setitem__("actions", np.zeros((6, 6), np.float32)), "action dim 6"),
    (lambda r: r.__setitem__("next_observations", np.zeros((5, 11), np.float32)), "next_observations shape"),
    (lambda r: r.__setitem__("timeouts", np.ones(4, bool)), "length mismatch"),
    (lambda r: r.__setitem__("terminals", np.array([0, 0, np.nan, 0, 0, 0])), "terminals must be boolean or 0/1"),
    (lambda r: r.__setitem__("terminals", np.array([0, 2, 0, 0, 0, 1])), r"terminals .* \(first: 2 at row 1\)"),
    (lambda r: r.__setitem__("timeouts", np.array([0, 0, 0, -1, 0, 0], np.int8)), "timeouts must be boolean or 0/1"),
    (lambda r: r.__setitem__("timeouts", np.array([b"0"] * 6)), "timeouts must be numeric"),
    (lambda r: r.__setitem__("rewards", np.array([b"1.5"] * 6)), "rewards must be numeric"),
    (lambda r: r.__setitem__("observations", np.full((6, 11), b"x")), "observations must be numeric"),
    (lambda r: r["actions"].__setitem__((3, 2), 1.5), r"1 action value\(s\) lie outside the action bounds \[-1, 1\]"),
    (lambda r: r["actions"].__setitem__((0, 0), -1.01), "outside the action bounds"),
])
def test_bad_arrays_raise_one_clear_error(tmp_path, mutate, match):
    raw = _raw()
    mutate(raw)
    path = tmp_path / "bad.hdf5"
    write_d4rl_hdf5(path, raw)
    with pytest.raises(DatasetError, match=match) as e:
        load_file(path, name="hopper-medium-v2")
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_flags_as_numbers_and_actions_at_the_bounds_load():
    raw = _raw()
    raw["terminals"] = np.array([0, 0, 1, 0, 0, 0], np.float32)
    raw["timeouts"] = np.array([0, 0, 0, 0, 1, 0], np.int64)
    raw["actions"][:, 0] = [1.0, -1.0, 1.0005, -1.0005, 0.5, 0.0]  # within the tolerance of float rounding
    ds = from_arrays(raw, _spec())
    assert ds.terminals.tolist() == [False, False, True, False]
    assert ds.timeouts.tolist() == [False, False, False, True]


def test_cli_string_rewards_and_nan_terminals_are_one_line(capsys, tmp_path):
    for key, value in (("rewards", np.array([b"1"] * 6)), ("terminals", np.full(6, np.nan))):
        raw = _raw()
        raw[key] = value
        path = tmp_path / f"bad_{key}.hdf5"
        write_d4rl_hdf5(path, raw)
        assert data.main(["info", str(path), "--env", "Hopper-v5"]) == 2
        err = capsys.readouterr().err  # (gymnasium-robotics may print a registration notice before it)
        assert err.splitlines()[-1].startswith(f"error: {path}: {key} must be") and "Traceback" not in err


def test_registry_action_bounds_are_the_envs(monkeypatch):
    from o2o.envs import env_action_bounds

    for family in ("hopper", "halfcheetah", "walker2d", "ant"):
        spec = next(s for s in REGISTRY.values() if s.family == family)
        assert env_action_bounds(spec.env_id) == spec.action_bounds == (-1.0, 1.0)


def test_file_without_env_asks_for_env(tmp_path, capsys):
    from o2o.cli import RunConfig, parse_config

    with pytest.raises(DatasetError, match="--env"):
        load_dataset("notes.txt")
    with pytest.raises(SystemExit) as e:
        parse_config(RunConfig, presets=lambda spec: {}, argv=["--dataset", "notes.txt"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--env" in err and "unknown dataset" not in err
    with pytest.raises(KeyError, match="unknown dataset"):
        get_spec("hopper-mediun-v2")


def test_default_out_stays_inside_runs():
    from o2o.cli import RunConfig, default_out

    for name in ("..", ".", "../../etc", "local:hopper-medium", "/abs/path/my.hdf5"):
        out = Path(default_out("iql", RunConfig(dataset=name, seed=3)))
        assert out.parts[:2] == ("runs", "iql") and len(out.parts) == 4 and out.parts[2] not in (".", ".."), name
        assert (Path("/r") / out).resolve().is_relative_to(Path("/r/runs/iql"))
    assert default_out("iql", RunConfig(dataset="local:hopper-medium")) == "runs/iql/local_hopper-medium/seed0"


def test_truncated_and_corrupt_files(tmp_path, hopper_file):
    blob = Path(hopper_file).read_bytes()
    trunc = tmp_path / "trunc.hdf5"
    trunc.write_bytes(blob[: len(blob) // 2])
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"\x00not hdf5" * 100)
    for p in (trunc, junk):
        with pytest.raises(DatasetError, match="truncated or corrupt"):
            load_file(p, name="hopper-medium-v2")
    with pytest.raises(DatasetError, match="does not exist"):
        load_file(tmp_path / "nope.hdf5", name="hopper-medium-v2")


def test_bring_your_own_file_needs_env(hopper_file):
    with pytest.raises(DatasetError, match="--env"):
        load_file(hopper_file)
    ds = load_dataset(hopper_file, env_id="Hopper-v5")
    assert ds.spec.env_id == "Hopper-v5" and ds.obs_dim == 11 and ds.spec.family == "hopper"
    assert np.isfinite(ds.episode_returns()).all()


def test_cli_list_and_info(capsys, hopper_file):
    assert data.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in REGISTRY:
        assert name in out
    assert data.main(["info", hopper_file, "--env", "Hopper-v5"]) == 0
    out = capsys.readouterr().out
    assert "transitions" in out and "episodes" in out and "return_mean" in out and "obs_dim          11" in out


def test_cli_errors_are_one_line(capsys, tmp_path):
    assert data.main(["info", "hoper-medium-v2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown dataset") and err.count("\n") == 1
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"garbage")
    assert data.main(["info", str(bad), "--env", "Hopper-v5"]) == 2
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and "Traceback" not in err


@pytest.fixture()
def mirror(tmp_path, monkeypatch, hopper_arrays):
    """A D4RL mirror on 127.0.0.1 holding hopper-medium-v2's file name, and an empty cache."""
    served = tmp_path / "mirror"
    served.mkdir()
    write_d4rl_hdf5(served / get_spec("hopper-medium-v2").filename, hopper_arrays)
    handler = partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None  # type: ignore[assignment]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("O2O_D4RL_BASE_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "cache"))
    yield tmp_path / "cache"
    server.shutdown()


def _pin_mirror_file(cache: Path) -> None:
    """Trust the mirror's hopper file (not D4RL's): pin its sha256 in <cache>/checksums.txt."""
    from o2o.download import sha256_file

    served = cache.parent / "mirror" / get_spec("hopper-medium-v2").filename
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "checksums.txt").write_text(f"{sha256_file(served)}  {served.name}\n")


def test_other_dataset_under_a_d4rl_name_is_refused(mirror, capsys):
    # A valid hopper dataset with the right dims, served as hopper_medium-v2.hdf5, is still not D4RL's file.
    assert data.main(["info", "hopper-medium-v2"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "GET /" not in ln]  # (the server's access log)
    assert len(err) == 1 and err[0].startswith("error: ") and "not the file of hopper-medium-v2" in err[0]
    assert sorted(p.name for p in mirror.iterdir() if not p.name.endswith(".lock")) == []


def test_downloaded_file_of_wrong_dims_is_refused(mirror, monkeypatch):
    spec = dataclasses.replace(get_spec("walker2d-medium-v2"), url=get_spec("hopper-medium-v2").url,
                               file_size=None, sha256=None)  # nothing known but the dims: 17 and 6
    monkeypatch.setitem(REGISTRY, "walker2d-medium-v2", spec)
    from o2o.download import DownloadError

    with pytest.raises(DownloadError, match=r"do not have walker2d-medium-v2's dims \(17 and 6\)"):
        load_dataset("walker2d-medium-v2", progress=False)


def test_d4rl_name_through_mirror_and_corrupt_cache_refetched(mirror, capsys, hopper_arrays):
    _pin_mirror_file(mirror)
    assert data.main(["info", "hopper-medium-v2"]) == 0
    assert "hopper-medium-v2" in capsys.readouterr().out
    cached = mirror / get_spec("hopper-medium-v2").filename
    assert cached.exists() and (mirror / (cached.name + ".sha256")).exists()
    # A file put there by hand that is not valid HDF5 is never used: fetched again.
    cached.write_bytes(b"corrupt")
    (mirror / (cached.name + ".sha256")).unlink()
    with pytest.warns(UserWarning):
        ds = load_dataset("hopper-medium-v2", progress=False)
    assert len(ds) == len(hopper_arrays["rewards"])  # the file has next_observations: every transition kept
    np.testing.assert_array_equal(ds.observations, hopper_arrays["observations"])
    with h5py.File(cached) as f:
        assert f["observations"].shape == hopper_arrays["observations"].shape


def test_offline_error_says_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    monkeypatch.setenv("O2O_D4RL_BASE_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    from o2o.download import DownloadError

    with pytest.raises(DownloadError) as e:
        load_dataset("walker2d-medium-v2", progress=False)
    msg = str(e.value)
    assert "walker2d_medium-v2.hdf5" in msg and str(tmp_path) in msg and "D4RL_DATASET_DIR" in msg


def test_hdf5_writer_leaves_nothing_half_written(tmp_path):
    """write_d4rl_hdf5 stages the file beside its target: a failed write leaves neither the target nor a temporary
    file, and an existing file stays as it was."""
    target = tmp_path / "d.hdf5"
    good = {"observations": np.zeros((3, 2), np.float32)}
    write_d4rl_hdf5(target, good)
    before = target.read_bytes()
    with pytest.raises(TypeError):
        write_d4rl_hdf5(target, {"observations": np.array([object()], dtype=object)})  # h5py cannot store objects
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["d.hdf5"]
    write_d4rl_hdf5(tmp_path / "sub" / "e.hdf5", good)
    assert h5py.File(tmp_path / "sub" / "e.hdf5")["observations"].shape == (3, 2)
