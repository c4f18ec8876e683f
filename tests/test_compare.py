"""`python -m o2o.suite compare` / `make compare` (o2o/compare.py): the README's "Add your algorithm" followed to the
letter on a tiny suite (the template copied and renamed, set beside IQL: the new name in every table and figure,
with its probability of improvement over the baseline), one line for a broken file, and the pieces it is built of."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.text
import pandas as pd
import pytest

from analysis import figures
from analysis.names import canonical_algorithm
from analysis.published import load_published
from analysis.report import build_report, select_runs, versus_pairs
from o2o import compare as C
from o2o import suite as S
from o2o.generate import generate
from o2o.suite import reporting

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GENERATED = "local:hopper-medium"
GENERATED_SIZE = 10_000  # as tests/test_template.py: one generated file for both
# The table of the test: the README's `quickstart` with one baseline and tiny networks and phases.
TINY_SUITE = """\
description: "tiny comparison: a new file beside IQL"
budget: smoke
seeds: [0, 1]
datasets: [local:hopper-medium]
args: {hidden_dim: 32, batch_size: 64, eval_episodes: 2, eval_every: 100}
compare_args:
  offline_steps: {smoke: 300}
  online_steps: {smoke: 100}
algorithms:
  iql: {file: baselines/iql.py, args: {offline_steps: {smoke: 300}, online_steps: {smoke: 100}}}
"""


def readme_commands() -> list[str]:
    """The shell lines of the first code block of the README's "Add your algorithm" (comments dropped)."""
    text = README.read_text()
    section = text[text.index("## Add your algorithm"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def tiny_table(where: Path) -> Path:
    """The test's table in `where`, its dataset generated small, and the template where the README expects it."""
    generate(GENERATED, size=GENERATED_SIZE)
    (where / "algorithms").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "algorithms" / "template.py", where / "algorithms" / "template.py")
    path = where / "tiny.yaml"
    path.write_text(TINY_SUITE)
    return path


def shell(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**S.worker_env(2), "PYTHONPATH": str(ROOT)}
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def figure_texts(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Patch analysis.figures.save_figure to keep, per saved figure, the texts of its axes and legends (not the
    caption under it, which names every algorithm anyway)."""
    seen: dict[str, list[str]] = {}
    save = figures.save_figure

    def keep(fig, stem):
        paths = save(fig, stem)  # draws the figure: tick labels exist from here on
        captions = set(map(id, fig.texts))
        seen[Path(stem).name] = [t.get_text() for t in fig.findobj(matplotlib.text.Text) if id(t) not in captions]
        return paths

    monkeypatch.setattr(figures, "save_figure", keep)
    return seen


# ------------------------------------------------------------------------------------------------ the README, run
def test_readme_compare_sets_the_renamed_template_beside_the_baselines(tmp_path, monkeypatch):
    """Done-when of issue 18: the README's commands, run as written (table `quickstart` -> the tiny suite file),
    copy the template as `mine`, run it and IQL, and report; `mine` is in every table and every figure, with its
    probability of improvement over IQL."""
    tiny_table(tmp_path)
    lines = readme_commands()
    assert lines[0] == """sed 's/^ALGORITHM = "bc"/ALGORITHM = "mine"/' algorithms/template.py > mine.py"""
    assert lines[1] == "python -m o2o.suite compare quickstart mine.py --baselines --workers 2"
    assert shell(lines[0], tmp_path).returncode == 0
    assert 'ALGORITHM = "mine"' in (tmp_path / "mine.py").read_text()
    done = shell(lines[1].replace("python ", f"{sys.executable} ").replace(" quickstart ", " tiny.yaml "), tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "mine.py honours the contract" in out and "iql: 2 of 2 runs not finished" in out
    where = out.strip().splitlines()[-1]
    assert where == "report of mine against tiny: reports/tiny/compare-mine/README.md"
    report = tmp_path / "reports" / "tiny" / "compare-mine"
    runs = tmp_path / "results" / "tiny" / "runs"
    assert sorted(p.parent.name for p in (runs / "mine").rglob("summary.json")) == ["seed0", "seed1"]
    assert json.loads((runs / "mine" / "compare.json").read_text())["sha256"] == C.file_digest(tmp_path / "mine.py")

    tables = sorted((report / "tables").glob("*.md"))
    assert {p.stem for p in tables} >= {"scores_last", "scores_best", "aggregate_last_score", "poi_last_score",
                                        "published_comparison"}
    for p in tables:
        assert "mine" in p.read_text(), p.name
    poi = pd.read_csv(report / "tables" / "poi_last_score.csv")
    assert list(zip(poi["algorithm_x"], poi["algorithm_y"])) == [("mine", "IQL")]
    readme = (report / "README.md").read_text()
    pngs = sorted(p.stem for p in (report / "figures").glob("*.png"))
    assert pngs == ["aggregate_last_score", "learning_curves", "poi_last_score", "profile_last_score"]
    assert all(f"figures/{name}.png" in readme for name in pngs)
    # the same figures again, in this process, to read what they show
    texts = figure_texts(monkeypatch)
    build_report(runs, tmp_path / "again", published="none", reps=20, curve_reps=20, algorithms="iql,mine",
                 versus="mine")
    assert sorted(texts) == pngs
    for name, shown in texts.items():
        assert "mine" in shown and "IQL" in shown, (name, shown)

    # the same comparison again reuses every run (nothing runs); a changed file is refused before anything runs
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(reporting, "report_command", lambda: None)
    lines = []
    assert C.compare("tiny.yaml", "mine.py", stream=_Lines(lines)) == 0
    assert any("2 runs, 0 to run" in ln and "2 skipped" in ln for ln in lines), lines
    with open(tmp_path / "mine.py", "a") as f:
        f.write("# changed\n")
    with pytest.raises(S.SuiteError, match="holds runs of another version of mine.py"):
        C.compare("tiny.yaml", "mine.py", stream=_Lines([]))


class _Lines:
    """A text stream that keeps what is printed to it, line by line."""

    def __init__(self, into: list[str]) -> None:
        self.into = into

    def write(self, text: str) -> int:
        self.into.extend(text.splitlines())
        return len(text)

    def flush(self) -> None:
        pass


def test_make_compare_is_the_same_command():
    if shutil.which("make") is None:
        pytest.skip("no make")
    assert "`make compare ALGO=mine.py TABLE=quickstart BASELINES=1` is the same command" in README.read_text()
    res = subprocess.run(["make", "--no-print-directory", "-n", "compare", "ALGO=mine.py", "TABLE=quickstart",
                          "BASELINES=1"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = res.stdout.replace("\\\n", " ").splitlines()  # under a parent make (CI's `make test`) too
    command = " ".join(next(ln for ln in reversed(lines) if "o2o.suite compare" in ln).split())
    assert command == ".venv/bin/python -m o2o.suite compare quickstart mine.py --baselines --workers 2 --pack 0"


# ------------------------------------------------------------------------------------------------ broken files
BROKEN = {
    "no LoopConfig": (("from o2o.cli import steps", "from o2o.cli import RunConfig, steps"),
                      ("class BCConfig(LoopConfig):", "class BCConfig(RunConfig):"),
                      "no --seeds, --online-steps, --eval-every: its config must inherit o2o.loop.LoopConfig"),
    "no main": (('if __name__ == "__main__":\n    raise SystemExit(main())', ""), ("", ""),
                "`--help` shows no command line"),
    "wrong records": (("    return loop.main(BCConfig", "    argv = [a.replace('0,1', '0') for a in (argv or "
                       "sys.argv[1:])]\n    return loop.main(BCConfig"), ("", ""),
                      "wrong records: no seed1/summary.json"),
    "a baseline's name": (('ALGORITHM = "bc"', 'ALGORITHM = "IQL"'), ("", ""),
                          "its records name the algorithm 'IQL', as the table's 'iql': rename ALGORITHM"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_file_gets_one_line_and_nothing_runs(case, tmp_path):
    first, second, message = BROKEN[case]
    tiny_table(tmp_path)
    text = (ROOT / "algorithms" / "template.py").read_text()
    for old, new in (first, second):
        assert old in text
        text = text.replace(old, new, 1)
    (tmp_path / "broken.py").write_text(text)
    res = shell(f"{sys.executable} -m o2o.suite compare tiny.yaml broken.py --baselines", tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: broken.py: {message}"), res.stderr
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------------------------------------------ the pieces
def test_suite_compare_args_extend_args_and_datasets_are_chosen(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(TINY_SUITE.replace("datasets: [local:hopper-medium]",
                                       "datasets: [local:hopper-medium, local:walker2d-medium]"))
    suite = S.load_suite(path, check_files=False)
    assert suite.compare_args == {"hidden_dim": 32, "batch_size": 64, "eval_episodes": 2, "eval_every": 100,
                                  "offline_steps": {"smoke": 300}, "online_steps": {"smoke": 100}}
    assert C.select_datasets(suite, "*walker*,nothing") == ("local:walker2d-medium",)
    with pytest.raises(S.SuiteError, match="no dataset matches 'ant'"):
        C.select_datasets(suite, "ant")
    both = C.compare_suite(suite, "mine", tmp_path / "mine.py", ("local:walker2d-medium",))
    assert list(both.algorithms) == ["iql", "mine"]
    assert {a.datasets for a in both.algorithms.values()} == {("local:walker2d-medium",)}
    assert both.algorithms["mine"].seeds == (0, 1) and both.published is None
    run = next(r for r in both.runs(tmp_path / "runs", "smoke") if r.algorithm == "mine")
    assert dict(run.args)["online_steps"] == "100" and dict(run.args)["hidden_dim"] == "32"
    with pytest.raises(C.ContractError, match="rename ALGORITHM"):
        C.compare_suite(suite, "I.Q.L", tmp_path / "mine.py", suite.datasets)
    offline = S.load_suite("offline", check_files=False)
    assert C.compare_suite(offline, "mine", tmp_path / "m.py", offline.datasets[:1]).published == "*_offline,mine"
    assert offline.compare_args["online_steps"] == 0  # the table's `args` reach a compared file too


def test_report_selects_runs_and_compares_one_algorithm_with_each_other():
    runs = pd.DataFrame({"run_id": ["iql/a/seed0", "mine/a/seed0", "mine/b/seed0", "other/a/seed0"],
                         "dataset": ["a", "a", "b", "a"]})
    evals = pd.DataFrame({"run_id": ["iql/a/seed0", "mine/b/seed0", "other/a/seed0"], "step": [1, 1, 1]})
    kept, kept_evals = select_runs(runs, evals, ["iql", "mine"], ["a"])
    assert list(kept["run_id"]) == ["iql/a/seed0", "mine/a/seed0"] and list(kept_evals["run_id"]) == ["iql/a/seed0"]
    assert len(select_runs(runs, evals)[0]) == 4
    assert versus_pairs("bc", ["BC", "IQL", "CQL"]) == [("BC", "IQL"), ("BC", "CQL")]
    assert canonical_algorithm("bc") == "BC"  # the template's records read as BC, like the other baselines


def test_published_patterns_may_be_a_list(tmp_path):
    row = "src,tab,{alg},hopper-medium-v2,offline,50.0,,\n"
    for name, alg in (("a_offline.csv", "IQL"), ("mine.csv", "mine"), ("other.csv", "CQL")):
        (tmp_path / name).write_text("source,table,algorithm,dataset,phase,score,std,flag\n" + row.format(alg=alg))
    assert sorted(load_published("*_offline,mine", tmp_path)["algorithm"]) == ["IQL", "mine"]
    assert len(load_published("*", tmp_path)) == 3
