"""Suite files and the suite runner: schema errors, resumable sweeps, failures, a killed runner, Ray, reproduce."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from o2o import suite as S
from o2o.records import LOCK_FILE, RunRecorder, is_finished, read_summary
from o2o.suite import fields as suite_fields
from o2o.suite import plan as suite_plan
from o2o.suite import reporting
from o2o.suite import spec as suite_spec

ROOT = Path(__file__).resolve().parent.parent
FAKE = Path(__file__).with_name("fake_algo.py")
FAKE_REPORT = Path(__file__).parent / "fixtures" / "fake_report.py"
VALID = {"budget": "smoke", "seeds": [0], "datasets": ["local:hopper-medium"], "algorithms": {"a": {"file": str(FAKE)}}}


def write_suite(tmp_path: Path, body: dict | str, name: str = "mysuite") -> Path:
    """A suite file in tmp_path from a dict (dumped as YAML) or raw text."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(body if isinstance(body, str) else yaml.safe_dump(body))
    return path


def with_(**changes) -> dict:
    """VALID with top-level keys replaced (None removes a key)."""
    body = json.loads(json.dumps(VALID))
    for k, v in changes.items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    return body


def algo(**entry) -> dict:
    """VALID with algorithm 'a' given extra keys."""
    return with_(algorithms={"a": {"file": str(FAKE), **entry}})


def lines(path: Path) -> list[dict]:
    """The JSON lines of a fake run's argv.txt."""
    return [json.loads(x) for x in path.read_text().splitlines()]


def steps_of(run_dir: Path) -> list[int]:
    """The steps of a run's evals.csv."""
    rows = (run_dir / "evals.csv").read_text().splitlines()[1:]
    return [int(r.split(",")[0]) for r in rows]


# ------------------------------------------------------------------------------------------------------------ schema
@pytest.mark.parametrize("body, key, words", [
    (with_(seed=[0]), "seed:", "unknown key"),
    (algo(arg={"x": 1}), "algorithms.a.arg", "unknown key"),
    (with_(algorithms={"a": {"file": "baselines/nope_missing.py"}}), "algorithms.a.file", "no such file"),
    (with_(algorithms={"a": {"args": {}}}), "algorithms.a.file", "missing"),
    (with_(datasets=["hopper-medum-v2"]), "datasets", "unknown dataset 'hopper-medum-v2'"),
    (with_(datasets=["local:hopper-great"]), "datasets", "unknown local dataset"),
    (algo(datasets=["antmaze-umaze-v9"]), "algorithms.a.datasets", "unknown dataset"),
    (with_(datasets=["hopper-medium-v2", "{hopper,walker2d}-medium-v2"]), "datasets", "listed twice"),
    (with_(budget="fast"), "budget", "smoke, short, full"),
    (with_(seeds=[0, "1"]), "seeds", "list of integers"),
    (with_(seeds="0,1"), "seeds", "list of integers"),
    (with_(seeds=0), "seeds", "at least 1"),
    (with_(seeds=[1, 1]), "seeds", "repeat"),
    (with_(seeds=[0, 1], min_seeds=5), "seeds", "min_seeds=5"),
    (algo(seeds=[0, 1.5]), "algorithms.a.seeds", "list of integers"),
    (with_(seeds=None), "seeds", "missing"),
    (algo(args={"seed": 3}), "algorithms.a.args.seed", "set by the runner"),
    (algo(args={"online_steps": {"tiny": 3}}), "algorithms.a.args.online_steps", "per-budget"),
    (algo(args={"net": {"full": [1, [2]]}}), "algorithms.a.args.net.full", "value must be"),
    (algo(args={"net": [1, {"a": 2}]}), "algorithms.a.args.net", "value must be"),
    (with_(args={"x": {"full": {"y": 1}}}), "args.x.full", "value must be"),
    (with_(algorithms={}), "algorithms", "missing or empty"),
    (with_(algorithms={"a b": str(FAKE)}), "algorithms.a b", "not a usable name"),
    ("budget: smoke\nseeds: [0\n", "invalid YAML", "line"),
])
def test_schema_errors_name_the_file_and_key(tmp_path: Path, body: dict | str, key: str, words: str) -> None:
    """Every kind of schema problem is one line naming the suite file, the key and the problem."""
    path = write_suite(tmp_path, body)
    with pytest.raises(S.SuiteError) as err:
        S.load_suite(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(S.display_path(path) + ": "), msg
    assert key in msg, msg
    assert words in msg, msg


WRONG_TYPES = {"name": "a b", "description": 3, "budget": 1, "seeds": "0,1", "min_seeds": "5",
               "datasets": "hopper-medium-v2", "args": [1], "published": 3, "compare_args": "x", "algorithms": ["a"]}
WRONG_ENTRY_TYPES = {"file": 3, "args": [1], "datasets": "hopper-medium-v2", "seeds": "0,1"}


@pytest.mark.parametrize("key", [*(f"top.{k}" for k in WRONG_TYPES), *(f"entry.{k}" for k in WRONG_ENTRY_TYPES)])
def test_each_key_of_the_typed_schema_refuses_a_wrong_type_in_one_line(tmp_path: Path, key: str,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Every key the schema declares (SuiteFile, AlgorithmFile) checks its value's type: `validate` prints one line
    naming the file and the key, and exits 1."""
    assert set(WRONG_TYPES) == {f.name for f in fields(S.SuiteFile)}  # the table covers the whole schema
    assert set(WRONG_ENTRY_TYPES) == {f.name for f in fields(S.AlgorithmFile)}
    level, name = key.split(".")
    body = with_(**{name: WRONG_TYPES[name]}) if level == "top" else algo(**{name: WRONG_ENTRY_TYPES[name]})
    path = write_suite(tmp_path, body)
    assert S.main(["validate", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    where = name if level == "top" else f"algorithms.a.{name}"
    assert len(err) == 1 and err[0].startswith(f"error: {S.display_path(path)}: {where}: "), err


def test_the_typed_schema_normalises_a_suite_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """parse_suite_file gives typed values: a seed count as a tuple, `{a,b}` expanded, a bare path as an entry; an
    unknown key names the allowed ones (the schema's fields, in order)."""
    body = {"seeds": 2, "datasets": ["{hopper,walker2d}-medium-v2"], "algorithms": {"a": str(FAKE)}}
    raw = suite_spec.parse_suite_file(body, tmp_path / "s.yaml")
    assert raw == S.SuiteFile(seeds=(0, 1), datasets=("hopper-medium-v2", "walker2d-medium-v2"),
                              algorithms={"a": S.AlgorithmFile(file=str(FAKE))})
    assert (raw.budget, raw.min_seeds, raw.args, raw.published) == ("full", 1, {}, None)
    path = write_suite(tmp_path, with_(datasetz=["x"]))
    assert S.main(["validate", str(path)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: {S.display_path(path)}: datasetz: unknown key; allowed: name, description, budget, seeds, "
        "min_seeds, datasets, args, published, compare_args, algorithms")


def test_valid_suite_expands_seeds_braces_shorthand_and_budget_args(tmp_path: Path) -> None:
    """A count of seeds, `{a,b}` names, a bare file path and per-budget args all resolve into commands."""
    body = {"budget": "short", "seeds": 3,
            "datasets": ["{hopper,walker2d}-medium-v2"],
            "args": {"online_steps": {"smoke": 7, "full": 1000}, "flag": True},
            "algorithms": {"plain": str(FAKE),
                           "other": {"file": str(FAKE), "seeds": [5], "datasets": ["local:hopper-medium"],
                                     "args": {"hidden_dims": [64, 64], "flag": False}}}}
    s = S.load_suite(write_suite(tmp_path, body))
    assert s.seeds == (0, 1, 2) and s.datasets == ("hopper-medium-v2", "walker2d-medium-v2")
    runs = s.runs(tmp_path / "runs")
    assert len(runs) == 3 * 2 + 1
    assert [r.seed for r in runs] == sorted(r.seed for r in runs)  # seed-major
    plain = next(r for r in runs if r.algorithm == "plain")
    cmd = plain.command()
    assert cmd[:2] == [sys.executable, str(FAKE)] and "--budget" in cmd and cmd[cmd.index("--budget") + 1] == "short"
    assert "--online-steps" not in cmd  # the mapping has no 'short'
    assert cmd[cmd.index("--flag") + 1] == "true"
    other = next(r for r in s.runs(tmp_path / "runs", budget="smoke") if r.algorithm == "other")
    cmd = other.command(resume=True)
    assert cmd[cmd.index("--online-steps") + 1] == "7" and cmd[cmd.index("--hidden-dims") + 1] == "64,64"
    assert cmd[cmd.index("--flag") + 1] == "false" and cmd[-2:] == ["--resume", "true"]
    assert other.out.endswith("other/local_hopper-medium/seed5")
    with pytest.raises(S.SuiteError, match="budget"):
        s.runs(tmp_path, budget="huge")


def test_unknown_suite_name_lists_the_known_ones() -> None:
    """A name that is neither in suites/ nor a file says which suites exist."""
    with pytest.raises(S.SuiteError, match="unknown suite.*quickstart"):
        S.load_suite("no_such_suite")


def test_args_checked_against_the_algorithm_fields(tmp_path: Path) -> None:
    """A misspelt field of an algorithm file is reported (its config class, imported in a subprocess)."""
    s = S.load_suite(write_suite(tmp_path, algo(args={"die_at": 2, "dye_at": 2})))
    problems = S.unknown_args(s)
    assert len(problems) == 1 and "algorithms.a.args.dye_at" in problems[0]


def test_config_fields_are_cached_until_a_source_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fields read from an algorithm file are kept in the cache file: a later command reads them without starting a
    subprocess, until the file or a module its import loaded (here its config's module) changes; a corrupt cache
    file is read around."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls = []
    real_run = subprocess.run
    monkeypatch.setattr(suite_fields.subprocess, "run", lambda *a, **k: calls.append(a) or real_run(*a, **k))
    helper = tmp_path / "mycfg.py"
    helper.write_text("from dataclasses import dataclass\n\nfrom o2o.cli import RunConfig\n\n\n@dataclass\n"
                      "class MyConfig(RunConfig):\n    alpha: float = 1.0\n")
    file = tmp_path / "mine.py"
    file.write_text("import sys\nfrom pathlib import Path\n\nsys.path.insert(0, str(Path(__file__).parent))\n"
                    "from mycfg import MyConfig  # noqa: E402\n")

    def fields_of_a_new_command() -> set[str] | None:
        monkeypatch.setattr(suite_fields, "_FIELDS_CACHE", {})  # a new process: nothing in memory
        return suite_fields.config_fields(file)

    assert "alpha" in fields_of_a_new_command() and len(calls) == 1
    assert suite_fields.cache_file().is_file()
    assert "alpha" in fields_of_a_new_command() and len(calls) == 1  # from the cache file
    helper.write_text(helper.read_text() + "    beta: int = 2\n")
    assert {"alpha", "beta"} <= fields_of_a_new_command() and len(calls) == 2
    assert "beta" in fields_of_a_new_command() and len(calls) == 2
    suite_fields.cache_file().write_text("{not json")
    assert "beta" in fields_of_a_new_command() and len(calls) == 3


@pytest.mark.parametrize("name", ["offline", "o2o", "famo2o", "local", "quickstart", "minari"])
def test_shipped_suites_are_valid(name: str) -> None:
    """The suites in suites/ validate, and their args are fields of those algorithm files that exist already."""
    s = S.load_suite(name, check_files=False)
    assert S.unknown_args(s) == []
    assert s.name == name and all(a.file.is_relative_to(ROOT) for a in s.algorithms.values())
    if name != "quickstart":
        assert len(s.seeds) >= 5 and s.min_seeds >= 5


def test_shipped_suite_contents() -> None:
    """The paper tables' datasets and algorithms are where the brief puts them."""
    off = S.load_suite("offline", check_files=False)
    assert set(off.algorithms) == {"uni_o4", "iql", "cql", "awac"} and len(off.datasets) == 26
    assert {"kitchen-mixed-v0", "relocate-human-v1", "antmaze-large-diverse-v2"} <= set(off.datasets)
    assert all(r.args == (("online_steps", "0"),) for r in off.runs("x"))
    o2o = S.load_suite("o2o", check_files=False)
    assert set(o2o.algorithms) == {"uni_o4", "famo2o", "iql", "cql", "awac"} and len(o2o.datasets) == 19
    online = {a: dict(r.args) for r in o2o.runs("x") for a in [r.algorithm]}  # every run has an online phase:
    assert online["iql"]["finetune"] == online["awac"]["finetune"] == "true"  # CORL's 1M, scaled by --budget
    assert online["cql"]["online_steps"] == "1000000" and "online_steps" not in online["uni_o4"]
    assert dict(o2o.runs("x", budget="smoke")[0].args).get("online_steps") != "0"
    fam = S.load_suite("famo2o", check_files=False)
    assert {a.args.get("base") for a in fam.algorithms.values()} == {"iql", "awac", None}
    assert sum(d.startswith("antmaze") and d.endswith("-v0") for d in fam.datasets) == 6
    loc = S.load_suite("local", check_files=False)
    assert len(loc.datasets) == 9 and all(d.startswith("local:") for d in loc.datasets)
    qs = S.load_suite("quickstart", check_files=False)
    assert qs.budget == "smoke" and len(qs.seeds) == 2 and all(d.startswith("local:") for d in qs.datasets)
    assert {"uni_o4", "famo2o", "iql", "cql", "awac", "ppo"} <= set(qs.algorithms)
    mi = S.load_suite("minari", check_files=False)  # validates without any Minari dataset on this machine
    assert len(mi.datasets) == 26 and all(d.startswith("minari:") for d in mi.datasets) and mi.published is None
    assert {d.split("/")[1] for d in mi.datasets} >= {"hopper", "antmaze", "pen", "kitchen"}
    assert set(mi.algorithms) == set(o2o.algorithms)


# ------------------------------------------------------------------------------------------------------------ runner
def test_dry_run_lists_runs_and_starts_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--dry-run names every run with its command and creates no run directory."""
    s = S.load_suite(write_suite(tmp_path, with_(seeds=[0, 1], algorithms={"a": str(FAKE), "b": str(FAKE)})))
    res = S.run_suite(s, out=tmp_path / "runs", dry_run=True, prepare=False)
    out = capsys.readouterr().out
    assert [p.action for p in res.plans] == ["start"] * 4
    for r in ("a/local:hopper-medium/seed0", "b/local:hopper-medium/seed1"):
        assert r in out
    assert "--dataset local:hopper-medium --seed 1" in out and "dry run: 4 start" in out
    assert not (tmp_path / "runs").exists()
    assert S.main(["run", str(tmp_path / "mysuite.yaml"), "--out", str(tmp_path / "runs"), "--dry-run",
                   "--only", "b"]) == 0
    assert "2 runs" in capsys.readouterr().out


def test_sweep_skips_finished_resumes_interrupted_and_records_failures(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A sweep goes on past failures; a re-run skips finished runs, resumes the killed one, retries the failed."""
    body = with_(seeds=[0, 1], algorithms={"good": str(FAKE),
                                           "bad": {"file": str(FAKE), "args": {"fail": True}},
                                           "crash": {"file": str(FAKE), "args": {"die_at": 2}}})
    s = S.load_suite(write_suite(tmp_path, body))
    out = tmp_path / "runs"
    res = S.run_suite(s, out=out, workers=2, prepare=False)
    d = {(r.algorithm, r.seed): Path(r.out) for r in s.runs(out)}
    assert not res.ok and len(res.outcomes) == 6
    assert {o.run.algorithm: o.status for o in res.outcomes} == {"good": "finished", "bad": "failed",
                                                                 "crash": "failed"}
    for seed in (0, 1):
        assert is_finished(d["good", seed]) and steps_of(d["good", seed]) == [1, 2, 3, 4]
        bad = read_summary(d["bad", seed])
        assert bad["status"] == "failed" and "fake failure requested" in bad["error"]
        assert bad["extra"]["exit_code"] == 1
        crash = read_summary(d["crash", seed])
        assert crash["status"] == "failed" and "dying at step 2" in crash["error"]
        assert (d["crash", seed] / "checkpoint.pt").exists() and steps_of(d["crash", seed]) == [1, 2]
        assert "dying at step 2" in (d["crash", seed] / "log.txt").read_text()
    failures = (out / "failures.csv").read_text().splitlines()
    assert len(failures) == 1 + 4 and sum("fake failure requested" in x for x in failures) == 2
    cores = len(os.sched_getaffinity(0))
    assert lines(d["good", 0] / "argv.txt")[0]["omp"] == str(max(1, cores // 2))
    good_before = {k: (v / "summary.json").read_bytes() for k, v in d.items() if k[0] == "good"}
    capsys.readouterr()

    dry = S.run_suite(s, out=out, dry_run=True, prepare=False)
    assert {(p.run.algorithm, p.action) for p in dry.plans} == {("good", "skip"), ("bad", "retry"),
                                                                 ("crash", "resume")}
    assert "--die-at 2 --resume true" in capsys.readouterr().out

    res2 = S.run_suite(s, out=out, workers=2, prepare=False)
    assert sorted(o.run.algorithm for o in res2.outcomes) == ["bad", "bad", "crash", "crash"]
    for seed in (0, 1):
        assert len(lines(d["good", seed] / "argv.txt")) == 1  # finished runs are not run again
        assert (d["good", seed] / "summary.json").read_bytes() == good_before["good", seed]
        calls = lines(d["crash", seed] / "argv.txt")
        assert len(calls) == 2 and "--resume" not in calls[0]["argv"] and calls[1]["argv"][-2:] == ["--resume", "true"]
        assert steps_of(d["crash", seed]) == [1, 2, 3, 4]  # the curve continues from the checkpoint
        summary = read_summary(d["crash", seed])
        assert summary["status"] == "finished" and summary["last_score"] == 40.0 and summary["n_evals"] == 4
        assert read_summary(d["bad", seed])["status"] == "failed"
    assert len((out / "failures.csv").read_text().splitlines()) == 1 + 6
    assert not res2.ok
    skipped = S.run_suite(s, out=out, prepare=False, retry_failed=False, only="good,crash")
    assert skipped.ok and skipped.outcomes == []


def test_stale_and_busy_runs_are_planned(tmp_path: Path) -> None:
    """A finished run of another budget or other args is rerun; a run locked by a live process is left alone."""
    s = S.load_suite(write_suite(tmp_path, algo(args={"tag": "x"})))
    run = s.runs(tmp_path / "runs")[0]
    rec = RunRecorder(run.out, "fake", run.dataset, run.seed, {}, budget="smoke")
    rec.log_eval(1, "offline", 0, 1.0, 1.0, 0.0)
    rec.finish()
    assert S.plan_run(run).action == "skip"
    assert S.plan_run(s.runs(tmp_path / "runs", budget="short")[0]).action == "rerun"
    (Path(run.out) / S.RUN_FILE).write_text(json.dumps({"spec": {**run.spec(), "args": {"tag": "y"}}}))
    plan = S.plan_run(run)
    assert plan.action == "rerun" and "args" in plan.reason
    with open(Path(run.out) / LOCK_FILE, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        assert S.plan_run(run).action == "busy"
    assert S.plan_run(run).action == "rerun"


def test_killed_runner_loses_no_finished_run(tmp_path: Path) -> None:
    """kill -9 of the runner mid-sweep stops its running run too; the restarted runner does not redo finished runs."""
    path = write_suite(tmp_path, with_(seeds=[0, 1, 2], algorithms={"slow": {"file": str(FAKE),
                                                                           "args": {"sleep": 0.15}}}))
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "o2o.suite", "run", str(path), "--out", str(out), "--workers", "1", "--no-prepare"]
    dirs = [Path(r.out) for r in S.load_suite(path).runs(out)]
    runner = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not is_finished(dirs[0]) and time.time() < deadline and runner.poll() is None:
            time.sleep(0.05)
        assert is_finished(dirs[0])
        deadline = time.time() + 20  # wait until the runner has started the next run, then kill it
        while not (dirs[1] / "argv.txt").exists() and time.time() < deadline:
            time.sleep(0.05)
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
    finally:
        if runner.poll() is None:
            runner.kill()
    deadline = time.time() + 15  # the orphaned run dies with its runner and releases its lock
    while suite_plan._locked(dirs[1]) and time.time() < deadline:
        time.sleep(0.1)
    assert not suite_plan._locked(dirs[1])
    assert not is_finished(dirs[1])
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 were done before" in done.stdout
    assert all(is_finished(d) for d in dirs)
    assert len(lines(dirs[0] / "argv.txt")) == 1
    assert steps_of(dirs[1]) == [1, 2, 3, 4]


def test_collect_and_reproduce(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """reproduce = run + collect (parquet tables) + report; without analysis.report it still collects."""
    import pandas as pd

    path = write_suite(tmp_path, with_(seeds=[0, 1], published="corl_*"))
    runs = tmp_path / "res" / "runs"
    monkeypatch.setattr(reporting, "report_command", lambda: [sys.executable, str(FAKE_REPORT)])
    assert S.main(["reproduce", str(path), "--out", str(runs), "--workers", "2", "--no-prepare"]) == 0
    out = capsys.readouterr().out
    table = pd.read_parquet(tmp_path / "res" / "runs.parquet")
    assert len(table) == 2 and set(table["status"]) == {"finished"}
    assert len(pd.read_parquet(tmp_path / "res" / "evals.parquet")) == 8
    args = json.loads((tmp_path / "res" / "table.md").read_text())
    assert args == {"runs": str(runs), "out": str(tmp_path / "res"), "published": "corl_*", "suite": "mysuite"}
    assert "table.md" in out and "figure.png" in out
    monkeypatch.undo()
    monkeypatch.setattr(reporting, "REPORT_MODULE", "analysis.no_such_report_module")
    assert S.main(["reproduce", str(path), "--out", str(runs), "--no-prepare"]) == 0
    assert "not available yet" in capsys.readouterr().out


def test_sweep_progress_is_a_tqdm_bar_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A sweep draws one tqdm bar over its runs on stderr (done/failed/skipped counts beside it) while the run lines
    stay on stdout; stderr is no terminal here, so the bar is drawn at its start and end only, not every tick."""
    body = with_(seeds=[0, 1], algorithms={"a": {"file": str(FAKE), "args": {"sleep": 0.25}}})
    s = S.load_suite(write_suite(tmp_path, body))
    assert S.run_suite(s, out=tmp_path / "runs", prepare=False).ok
    out, err = capsys.readouterr()
    assert "finished  a/local:hopper-medium/seed0" in out and "[mysuite] 2/2 done" in out
    assert "\r" not in err  # off a terminal every draw is a line of its own (a log never glues it to a run line)
    draws = [d for d in err.split("\n") if d.strip()]
    assert 2 <= len(draws) <= 3, draws  # no redraw per tick (the sweep lasts several 0.2 s ticks)
    assert draws[0].startswith("mysuite:") and "0/2" in draws[0]
    assert "2/2" in draws[-1] and "done=2, failed=0, skipped=0" in draws[-1] and "s/run" in draws[-1]
    assert "mysuite:" not in out and "%|" not in out  # no bar on stdout
    assert S.run_suite(s, out=tmp_path / "runs", prepare=False).ok  # again: every run skipped
    last = capsys.readouterr().err.strip().split("\n")[-1]
    assert "2/2" in last and "done=0, failed=0, skipped=2" in last


@pytest.mark.ray
def test_ray_backend(tmp_path: Path) -> None:
    """The same runs as Ray tasks on a local instance; a re-run skips them."""
    ray = pytest.importorskip("ray")
    s = S.load_suite(write_suite(tmp_path, with_(seeds=[0, 1], algorithms={"a": str(FAKE),
                                                                             "bad": {"file": str(FAKE),
                                                                                     "args": {"fail": True}}})))
    out = tmp_path / "runs"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = S.run_suite(s, out=out, workers=2, backend="ray", prepare=False)
    finally:
        ray.shutdown()
    assert sorted((o.run.algorithm, o.status) for o in res.outcomes) == [("a", "finished"), ("a", "finished"),
                                                                         ("bad", "failed"), ("bad", "failed")]
    assert all(is_finished(r.out) for r in s.runs(out) if r.algorithm == "a")
    assert len((out / "failures.csv").read_text().splitlines()) == 3
    again = S.run_suite(s, out=out, dry_run=True)
    assert {p.action for p in again.plans if p.run.algorithm == "a"} == {"skip"}


# ---------------------------------------------------------------------------------------------- run safety (issue 14)
def test_validate_fails_for_a_suite_whose_runs_would_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing algorithm file and an unknown field are errors of `validate` (one line each, exit 1), not warnings."""
    body = with_(algorithms={"gone": {"file": "baselines/nope_missing.py"},
                             "typo": {"file": str(FAKE), "args": {"dye_at": 2}}})
    path = write_suite(tmp_path, body)
    assert S.main(["validate", str(path)]) == 1
    out, err = capsys.readouterr()
    errors = err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("error: ") for e in errors)
    assert "algorithms.gone.file: no such file" in errors[0] and "algorithms.typo.args.dye_at" in errors[1]
    assert "ok:" not in out
    assert S.main(["validate", str(write_suite(tmp_path, VALID, name="fine"))]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_second_runner_does_not_relaunch_a_run_finished_since_it_planned(tmp_path: Path) -> None:
    """Two runners plan the same run; the second takes the lock after the first finished it: nothing is rerun."""
    s = S.load_suite(write_suite(tmp_path, VALID))
    run = s.runs(tmp_path / "runs")[0]
    first, second = S.plan_run(run), S.plan_run(run)
    assert first.action == second.action == "start"
    env = S.worker_env(1)
    assert S.execute_run(first, env).status == "finished"
    again = S.execute_run(second, env)
    assert again.status == "finished" and again.score == 40.0
    assert len(lines(Path(run.out) / "argv.txt")) == 1


def test_prepare_keeps_a_custom_size_local_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Preparing a sweep does what the run's loader does: an existing local: file keeps its size (not 1M)."""
    from o2o.generate import _read_meta, generate

    monkeypatch.setenv("O2O_DATA_DIR", str(tmp_path / "data"))
    path = generate("local:hopper-random", size=300)
    before = (path.stat().st_mtime_ns, _read_meta(path)["size"])
    s = S.load_suite(write_suite(tmp_path, with_(datasets=["local:hopper-random"])))
    plans = [S.plan_run(r) for r in s.runs(tmp_path / "runs")]
    S.prepare_datasets(plans, S.worker_env(1), tmp_path, sys.stdout)
    assert "local:hopper-random: ok" in capsys.readouterr().out
    assert (path.stat().st_mtime_ns, _read_meta(path)["size"]) == before == (before[0], 300)


def test_run_directory_of_a_dataset_stays_inside_the_runs_directory(tmp_path: Path) -> None:
    """Dataset names become one directory name (the same rule as the algorithm files' default --out)."""
    assert suite_spec._safe("local:hopper-medium") == "local_hopper-medium" and suite_spec._safe("..") == "__"


# ------------------------------------------------------------------------------------------------ seed packing
def test_make_packs_groups_seeds_by_file_support_and_checkpoint_step(tmp_path: Path) -> None:
    """Seeds of an engine file share a process (capped by --pack) unless their checkpoints are at other steps;
    files without --seeds keep one process per run."""
    body = with_(seeds=[0, 1, 2, 3], algorithms={"iql": {"file": str(ROOT / "baselines" / "iql.py")},
                                                 "fake": {"file": str(FAKE)}})
    s = S.load_suite(write_suite(tmp_path, body))
    runs = s.runs(tmp_path / "runs")
    plans = [S.Plan(r, "start") for r in runs]
    packs = S.make_packs(plans, pack=0)
    iql = [[p.run.seed for p in g] for g in packs if g[0].run.algorithm == "iql"]
    assert iql == [[0, 1, 2, 3]] and sum(g[0].run.algorithm == "fake" for g in packs) == 4
    assert [[p.run.seed for p in g] for g in S.make_packs(plans, pack=3) if g[0].run.algorithm == "iql"] == \
        [[0, 1, 2], [3]]
    assert all(len(g) == 1 for g in S.make_packs(plans, pack=1))
    for r in runs:  # seeds 2 and 3 hold a checkpoint at step 40: they resume together, apart from 0 and 1
        if r.algorithm == "iql" and r.seed >= 2:
            Path(r.out).mkdir(parents=True)
            (Path(r.out) / "checkpoint.pt").write_bytes(b"x")
            (Path(r.out) / "checkpoint.json").write_text('{"step": 40}')
    plans = [S.Plan(r, "resume" if r.seed >= 2 else "start") for r in runs if r.algorithm == "iql"]
    packs = S.make_packs(plans)
    assert [[p.run.seed for p in g] for g in packs] == [[0, 1], [2, 3]]
    cmd = S.pack_command([p.run for p in packs[1]], resume=True)
    assert cmd[cmd.index("--seeds") + 1] == "2,3"
    assert cmd[cmd.index("--out") + 1] == str(Path(packs[1][0].run.out).parent)
    assert "--resume" in cmd and "--seed" not in cmd


def test_packed_sweep_gives_the_records_of_unpacked_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """One process for the three seeds of IQL; every seed's records equal those of a sweep with --pack 1."""
    from o2o.generate import generate

    monkeypatch.setenv("O2O_DATA_DIR", str(tmp_path / "data"))
    generate("local:hopper-random", size=400)
    args = {"hidden_dim": 32, "batch_size": 64, "offline_steps": 20, "online_steps": 10, "eval_every": 10,
            "eval_episodes": 1, "log_every": 10}
    body = with_(seeds=[0, 1, 2], datasets=["local:hopper-random"],
                 algorithms={"iql": {"file": str(ROOT / "baselines" / "iql.py"), "args": args}})
    s = S.load_suite(write_suite(tmp_path, body))
    packed = S.run_suite(s, out=tmp_path / "packed", workers=1, prepare=False)
    assert packed.ok and "3 to run in 1 process(es)" in capsys.readouterr().out
    alone = S.run_suite(s, out=tmp_path / "alone", workers=2, prepare=False, pack=1)
    assert alone.ok and "3 to run in 3 process(es)" in capsys.readouterr().out
    for seed in (0, 1, 2):
        a = tmp_path / "packed" / "iql" / "local_hopper-random" / f"seed{seed}"
        b = tmp_path / "alone" / "iql" / "local_hopper-random" / f"seed{seed}"
        assert (a / "evals.csv").read_text() == (b / "evals.csv").read_text()
        assert json.loads((a / "run.json").read_text())["pack"] == [0, 1, 2]
    again = S.run_suite(s, out=tmp_path / "packed", workers=1, prepare=False)  # idempotent: all skipped
    assert again.ok and "0 to run" in capsys.readouterr().out


def test_a_corrupt_checkpoint_fails_once_then_the_run_starts_afresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The failure names the corrupt checkpoint in one line; the next sweep does not retry the resume forever: it
    starts the run from scratch (its checkpoint can never be trusted)."""
    from o2o.generate import generate

    monkeypatch.setenv("O2O_DATA_DIR", str(tmp_path / "data"))
    generate("local:hopper-random", size=400)
    args = {"hidden_dim": 32, "batch_size": 64, "offline_steps": 20, "eval_every": 10, "eval_episodes": 1}
    body = with_(seeds=[0], datasets=["local:hopper-random"],
                 algorithms={"iql": {"file": str(ROOT / "baselines" / "iql.py"), "args": args}})
    s = S.load_suite(write_suite(tmp_path, body))
    assert S.run_suite(s, out=tmp_path / "runs", prepare=False).ok
    run = Path(s.runs(tmp_path / "runs")[0].out)
    (run / "summary.json").unlink()  # as if killed after its last checkpoint
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    first = S.run_suite(s, out=tmp_path / "runs", prepare=False)
    assert not first.ok and "is corrupt or truncated" in (read_summary(run) or {})["error"]
    assert S.plan_run(s.runs(tmp_path / "runs")[0]).action == "rerun"
    second = S.run_suite(s, out=tmp_path / "runs", prepare=False)
    assert second.ok and read_summary(run)["status"] == "finished"
    assert "corrupt" in (tmp_path / "runs" / "failures.csv").read_text()
