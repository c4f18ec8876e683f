"""The report a researcher pastes: header, captions with the budget, honest small-sample intervals, the behaviour
reference level, learning curves per phase, and reproduce output that leaves the checkout clean."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import o2o.records as records
import o2o.suite as S
from analysis import aggregate, figures, tables
from analysis.collect import collect
from analysis.header import behaviour_scores, display_names, report_header
from analysis.report import build_report, default_columns
from o2o.generate import behaviour_score, data_dir
from o2o.hdf5 import write_d4rl_hdf5
from o2o.records import RunRecorder, device_name
from o2o.suite import reporting

REPO = Path(__file__).resolve().parents[1]
FAKE_REPORT = Path(__file__).parent / "fixtures" / "fake_report.py"
DATASET = "local:hopper-medium"
BEHAVIOUR = 27.6
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def record_o2o(root: Path, alg: str, seed: int, scores: tuple[float, ...] = (20.0, 25.0, 22.0, 30.0),
               dataset: str = DATASET, success: tuple[float, ...] | None = None, **extra: float) -> Path:
    """An offline-to-online run as the algorithm files record it: steps run on through the online phase (1500,
    2000) while env_steps count the online phase (500, 1000)."""
    out = root / alg / dataset.replace(":", "_") / f"seed{seed}"
    cfg = {"offline_steps": 1000, "online_steps": 1000, "eval_episodes": 2, "device": "cpu", "out": str(out),
           "seed": seed}
    rec = RunRecorder(out, alg, dataset, seed, cfg, budget="smoke")
    rows = [(500, "offline", 0), (1000, "offline", 0), (1500, "online", 500), (2000, "online", 1000)]
    for k, ((step, phase, env), score) in enumerate(zip(rows, scores)):
        succ = None if success is None else (success[k - 2] if phase == "online" else 0.0)
        rec.log_eval(step, phase, env, score + seed, 10 * score, 1.0, succ)
    rec.extra.update(extra)
    rec.progress(2000, 1000)
    rec.finish()
    return out


def record_online(root: Path, alg: str, seed: int, dataset: str = DATASET) -> Path:
    """A run trained online from scratch (PPO): no offline phase, step = env_steps."""
    out = root / alg / dataset.replace(":", "_") / f"seed{seed}"
    rec = RunRecorder(out, alg, dataset, seed, {"total_steps": 4096, "rollout_steps": 2048, "eval_episodes": 2,
                                                "device": "cpu"}, budget="smoke")
    for step, score in ((2048, 3.0), (4096, 5.0)):
        rec.log_eval(step, "online", step, score + seed, 10 * score, 1.0)
    rec.progress(4096, 4096)
    rec.finish()
    return out


@pytest.fixture(autouse=True)
def _fixed_commit_and_data(tmp_path, monkeypatch):
    """Records name a fixed commit; datasets live in a fresh data dir holding local:hopper-medium's metadata."""
    monkeypatch.setattr(records, "git_commit", lambda: COMMIT)
    monkeypatch.setenv("O2O_DATA_DIR", str(tmp_path / "data"))
    write_d4rl_hdf5(data_dir() / "hopper-medium.hdf5", {"rewards": np.zeros(3, np.float32)},
                    {"name": DATASET, "behaviour_normalized": BEHAVIOUR})


@pytest.fixture()
def small_root(tmp_path) -> Path:
    """Two seeds of an offline-to-online algorithm and of PPO on local:hopper-medium."""
    root = tmp_path / "runs"
    for seed in (0, 1):
        record_o2o(root, "awac", seed)
        record_online(root, "ppo", seed)
    return root


@pytest.fixture()
def figures_made(monkeypatch) -> list:
    """Every figure the analysis saves, kept (still drawable) for inspection."""
    made: list = []
    original = figures.save_figure

    def keep(fig, stem):
        fig.canvas.draw()
        made.append((Path(stem).name, fig, [t.get_text() for t in fig.texts], fig.axes))
        return original(fig, stem)

    monkeypatch.setattr(figures, "save_figure", keep)
    return made


# ------------------------------------------------------------------ header


def test_header_fields(small_root):
    runs, evals = collect(small_root)
    head = report_header(runs, evals, "quickstart", "all algorithms", min_seeds=5, made="2030-01-02")
    algs = {a.algorithm: a for a in head.algorithms}
    assert head.suite == "quickstart" and head.budget_label() == "smoke"
    assert algs["AWAC"].phases() == "1,000 gradient → 1,000 env steps"
    assert algs["AWAC"].config_steps == "offline_steps=1000, online_steps=1000"
    assert algs["PPO"].phases() == "4,096 env steps (online from scratch)"
    assert algs["PPO"].regime == "online" and algs["AWAC"].regime == "offline-to-online"
    assert head.seeds == [0, 1] and head.runs_per_task == (2, 2)
    assert head.eval_episodes == "2"
    assert head.commits == ["`0123456789ab` (4 runs)"]
    assert head.run_dates == time.strftime("%Y-%m-%d") and head.made == "2030-01-02"
    assert head.device == "cpu"
    md = "\n".join(head.markdown())
    for field in ("**Suite**: quickstart — all algorithms", "**Budget**: smoke", "**Seeds**: 2 seeds per algorithm "
                  "and dataset (0, 1)", "**Evaluation episodes**: 2", "**Commit**: `0123456789ab`",
                  "**Date**: runs", "**Device**: cpu", "| AWAC | offline→online | smoke | 1,000 | 1,000 |"):
        assert field in md, field
    assert "Fewer seeds than the suite asks for" in md and "`min_seeds` is 5" in md
    assert "Small sample" in md and "Budget smoke" in md
    cap = head.caption()
    assert cap.startswith("Budget smoke: AWAC 1,000 gradient → 1,000 env steps; PPO 4,096 env steps (online from "
                          "scratch). 2 seeds per algorithm and dataset (0, 1); 2 evaluation episodes.")
    assert "from scratch: online training only" in cap
    assert "PPO" not in head.caption(["AWAC"])


def test_header_without_device_field_says_so(small_root):
    runs, evals = collect(small_root)
    head = report_header(runs.drop(columns=["device"]), evals, "x")
    assert head.device == "cpu (requested; the resolved device is not in these records)"
    assert report_header(runs, evals, "x", min_seeds=2).warnings()[0].startswith("**Small sample**")


def test_run_summary_records_the_device(tmp_path):
    assert RunRecorder(tmp_path / "a", "iql", DATASET, 0, {"device": "cpu"}).summary()["device"] == "cpu"
    auto = RunRecorder(tmp_path / "b", "iql", DATASET, 0, {}).summary()["device"]
    assert auto == device_name("auto") and auto.split(":")[0] in ("cpu", "cuda")


def test_every_table_and_figure_carries_the_budget(small_root, tmp_path, figures_made):
    out = tmp_path / "report"
    written = build_report(small_root, out, published="none", suite="quickstart", reps=50, curve_reps=20)
    readme = (out / "README.md").read_text()
    top = readme.split("## Tables")[0]
    for field in ("# Report: quickstart", "**Suite**: quickstart — Quickstart", "**Budget**: smoke", "**Seeds**",
                  "**Evaluation episodes**", "**Commit**", "**Date**", "**Device**", "Small sample"):
        assert field in top, field
    md = [p for p in written["tables"] if p.suffix == ".md"]
    tex = [p for p in written["tables"] if p.suffix == ".tex"]
    assert {p.stem for p in md} >= {"scores_last", "scores_best", "aggregate_last_score", "poi_last_score"}
    for p in md:
        assert "Budget smoke: AWAC 1,000 gradient" in p.read_text().splitlines()[0], p.name
    for p in tex:
        caption = re.search(r"\\caption\{(.*)\}", p.read_text()).group(1)
        assert "Budget smoke: AWAC 1,000 gradient" in caption, p.name
    assert {name for name, *_ in figures_made} >= {"aggregate_last_score", "profile_last_score", "poi_last_score",
                                                   "learning_curves"}
    for name, _fig, texts, _axes in figures_made:
        assert any("Budget smoke: AWAC 1,000 gradient" in " ".join(t.split()) for t in texts), name


# ------------------------------------------------------------------ small samples


def _matrix_runs(values: dict[str, np.ndarray]) -> pd.DataFrame:
    """Runs of one task with the given last scores per algorithm."""
    rows = [dict(run_id=f"{a}/{s}", algorithm=a, dataset="t", domain="other", seed=s, status="finished",
                 last_score=float(v)) for a, vals in values.items() for s, v in enumerate(vals)]
    return pd.DataFrame(rows)


def test_small_samples_print_no_interval(small_root, tmp_path):
    out = tmp_path / "report"
    build_report(small_root, out, published="none", reps=50, curve_reps=20)
    met = pd.read_csv(out / "tables" / "aggregate_last_score.csv")
    assert met["ci_low"].isna().all() and met["ci_high"].isna().all()
    assert set(met["interval"]) == {"none: n < 5 runs per task"}
    poi = pd.read_csv(out / "tables" / "poi_last_score.csv")
    assert poi["probability"].tolist() == [1.0] and poi["ci_low"].isna().all()
    for name in ("aggregate_last_score.md", "poi_last_score.md", "aggregate_last_score.tex", "poi_last_score.tex"):
        text = (out / "tables" / name).read_text()
        assert ("n $<$ 5" if name.endswith(".tex") else "n < 5") in text, name  # '<' is no text-mode LaTeX
        assert not re.search(r"\[(-?[\d.]+), \1\]", text), name  # no zero-width [a, a]
        assert "[" not in text.split("\n", 2)[2], name  # no interval at all below the caption
    prof = pd.read_csv(out / "tables" / "profile_last_score.csv")
    assert prof["ci_low"].isna().all()
    curves = pd.read_csv(out / "tables" / "learning_curves.csv")
    assert curves["ci_low"].isna().all() and (curves["n_seeds"] == 2).all()


def test_zero_width_and_enough_runs(tmp_path):
    rng = np.random.default_rng(0)
    sep = aggregate.score_matrices(_matrix_runs({"X": 60 + rng.random(6), "Y": 40 + rng.random(6)}))
    poi = aggregate.probability_of_improvement(sep, [("X", "Y")], reps=100).iloc[0]
    assert poi["probability"] == 1.0 and math.isnan(poi["ci_low"]) and poi["interval"].startswith("none: zero width")
    header, rows = tables.poi_rows(pd.DataFrame([poi]))
    assert rows[0][3].startswith("none: zero width") and "1.00, 1.00" not in " ".join(rows[0])
    mixed = aggregate.score_matrices(_matrix_runs({"X": 50 + 10 * rng.random(6), "Y": 50 + 10 * rng.random(6)}))
    poi = aggregate.probability_of_improvement(mixed, [("X", "Y")], reps=200).iloc[0]
    assert poi["ci_low"] < poi["probability"] < poi["ci_high"] and poi["interval"] == aggregate.INTERVAL
    met = aggregate.aggregate_metrics(mixed, reps=200)
    assert met["ci_low"].notna().all() and set(met["interval"]) == {aggregate.INTERVAL}
    few = aggregate.score_matrices(_matrix_runs({"X": [50.0, 52.0, 53.0, 51.0], "Y": 50 + rng.random(4)}))
    assert aggregate.aggregate_metrics(few, reps=50)["ci_low"].isna().all()


# ------------------------------------------------------------------ learning curves


def test_learning_curve_x_rule_both_phases(small_root, tmp_path, figures_made):
    runs, evals = collect(small_root)
    curves = figures.learning_curve_data(evals, reps=20)
    awac = curves[curves["algorithm"] == "AWAC"]
    # offline at gradient steps; online at env steps (500, 1000), not the run's step counter (1500, 2000)
    assert awac.loc[awac["phase"] == "offline", "x"].tolist() == [500.0, 1000.0]
    assert awac.loc[awac["phase"] == "online", "x"].tolist() == [500.0, 1000.0]
    assert set(awac.loc[awac["phase"] == "offline", "x_unit"]) == {"gradient steps"}
    assert set(awac.loc[awac["phase"] == "online", "x_unit"]) == {"env steps"}
    assert curves.loc[curves["algorithm"] == "PPO", "phase"].unique().tolist() == ["online"]
    assert curves.loc[curves["algorithm"] == "PPO", "x"].tolist() == [2048.0, 4096.0]
    assert awac["iqm"].iloc[-1] == pytest.approx(30.5)  # seeds 0 and 1 end at 30 and 31
    labels = display_names(runs)
    figures.plot_learning_curves(evals, tmp_path / "curves", curves=curves, caption="Budget smoke.",
                                 behaviour=behaviour_scores(runs["dataset"]), labels=labels)
    _, fig, texts, axes = figures_made[-1]
    off, on = (ax for ax in axes if ax.get_visible())
    assert off.get_title() == f"{DATASET}: offline" and on.get_title() == f"{DATASET}: online"
    assert "gradient steps" in off.get_xlabel() and "env steps" in on.get_xlabel()
    width = fig.get_figwidth()
    assert off.get_position().width * width > 2.5 and on.get_position().width * width > 2.5  # wide panels
    awac_on = [ln for ln in on.get_lines() if ln.get_label() == "AWAC (off→on)"]
    assert awac_on and max(awac_on[0].get_xdata()) == 1000.0  # env steps, no offset
    assert max(max(ln.get_xdata()) for ln in off.get_lines() if ln.get_label() == "AWAC (off→on)") == 1000.0
    starts = [ln for ln in on.get_lines() if list(ln.get_xdata()) == [0.0, 500.0]]  # from the switch at 0
    assert starts and starts[0].get_ydata()[0] == pytest.approx(25.5)  # the last offline IQM
    for ax in (off, on):
        refs = [ln for ln in ax.get_lines() if ln.get_label() == "behaviour policy"]
        assert refs and set(refs[0].get_ydata()) == {BEHAVIOUR}
    assert [ln.get_xdata()[0] for ln in on.get_lines() if ln.get_label() == figures.SWITCH] == [0.0]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"AWAC (off→on)", "PPO (from scratch)", "behaviour policy", figures.SWITCH} <= set(legend)
    caption = " ".join(" ".join(texts).split())
    assert "band: 95% percentile-bootstrap interval" in caption and "thin lines show the individual seeds" in caption
    assert "Budget smoke." in caption


# ------------------------------------------------------------------ reference levels, labels, tables


def test_behaviour_score_from_dataset_metadata(tmp_path):
    assert behaviour_score(DATASET) == pytest.approx(BEHAVIOUR)
    assert behaviour_score("local:walker2d-medium") is None  # not generated here
    assert behaviour_score("hopper-medium-v2") is None  # D4RL files carry none
    assert behaviour_score("no-such-dataset") is None


def test_scores_tables_show_behaviour_and_regimes(small_root, tmp_path):
    out = tmp_path / "report"
    build_report(small_root, out, published="corl_*", reps=50, curve_reps=20)
    last = (out / "tables" / "scores_last.md").read_text()
    assert "| Dataset | Behaviour | AWAC (off→on) | PPO (from scratch) |" in last
    assert f"| {DATASET} | 27.6 | 30.5 ± 0.7 | 5.5 ± 0.7 |" in last
    assert "total" not in last  # one dataset: no domain total
    assert "optimistic" in (out / "tables" / "scores_best.md").read_text().splitlines()[0]
    comp = (out / "tables" / "published_comparison.md").read_text()
    assert "No published row matches these runs" in comp and "| –" not in comp
    assert "AWAC on local:hopper-medium (offline, online)" in comp
    assert not (out / "tables" / "published_comparison.tex").exists()
    readme = (out / "README.md").read_text()
    assert "local:hopper-medium 27.6" in readme


def test_domain_total_needs_two_datasets():
    rows = [dict(algorithm="A", domain="locomotion", dataset=d, metric="last_score", mean=m, std=1.0, n=2)
            for d, m in (("hopper-medium-v2", 50.0), ("walker2d-medium-v2", 70.0))]
    rows.append(dict(algorithm="A", domain="antmaze", dataset="antmaze-umaze-v2", metric="last_score", mean=80.0,
                     std=1.0, n=2))
    table = pd.DataFrame(rows)
    totals = tables.domain_totals(table)
    assert totals["domain"].tolist() == ["locomotion"] and totals["total"].tolist() == [120.0]
    _, body, _ = tables.score_table_rows(table, "last_score", totals, behaviour={"hopper-medium-v2": 10.0})
    firsts = [r[0] for r in body]
    assert "locomotion total" in firsts and "antmaze total" not in firsts
    assert body[firsts.index("locomotion total")][1] == "–"  # behaviour total needs every dataset's score


def test_final_score_column_and_regrets(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        d = record_o2o(root, "iql", seed, dataset="antmaze-umaze-v2", success=(0.5, 1.0), final_regret=0.4)
        summary = json.loads((d / "summary.json").read_text())
        (d / "summary.json").write_text(json.dumps({**summary, "final_score": 40.0 + seed}))
        record_o2o(root, "iql", seed, final_regret=1.0)  # locomotion: no success, so no regret
    runs, evals = collect(root)
    assert default_columns(runs) == ["final_score", "last_score"]
    paths = tables.write_all_tables(runs, tmp_path / "t", budget="Budget smoke.", evals_df=evals)
    final = paths["scores_final.md"].read_text()
    assert "final (dedicated final evaluation)" in final and "40.5 ± 0.7" in final
    reg = pd.read_csv(paths["regret.csv"])
    assert set(reg["dataset"]) == {"antmaze-umaze-v2"}
    assert reg.set_index("kind")["mean"].to_dict() == pytest.approx({"train": 0.4, "eval": 0.25})
    md = paths["regret.md"].read_text()
    assert "| Dataset | Algorithm | Train regret | Eval regret |" in md and "Budget smoke." in md


# ------------------------------------------------------------------ other figures


def test_profile_axis_fits_the_data():
    mats = aggregate.score_matrices(_matrix_runs({"X": [10.0, 20.0, 25.0], "Y": [5.0, 15.0, 28.0]}))
    taus = aggregate.default_taus(mats)
    assert taus[0] == 0.0 and 28.0 < taus[-1] < 31.0
    assert aggregate.default_taus(mats, extra=[40.0])[-1] > 40.0


def test_beta_figures_integer_counts_and_one_entry_per_run(tmp_path, figures_made):
    rows = [dict(run_id=f"f/{s}", algorithm="IQL+FamO2O", dataset=DATASET, seed=s, step=k, phase="online",
                 normalized_score=1.0, beta_mean=1.0 + 0.1 * k + s, beta_q10=0.5, beta_q50=1.0, beta_q90=1.5)
            for s in (0, 1) for k in range(3)]
    figures.plot_beta(pd.DataFrame(rows), tmp_path / "beta")
    _, _, _, axes = figures_made[-1]
    ticks = axes[0].get_yticks()
    assert len(ticks) > 1 and np.allclose(ticks, np.round(ticks))
    states = pd.DataFrame([dict(dataset=DATASET, algorithm="IQL+FamO2O", seed=s, beta=b)
                           for s in (0, 1) for b in np.linspace(s, s + 1, 50)])
    figures.plot_beta_states(states, tmp_path / "beta_states")
    fig = figures_made[-1][1]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["IQL+FamO2O seed 0", "IQL+FamO2O seed 1"]
    styles = {p.get_linestyle() for p in fig.axes[0].patches}
    assert len(styles) == 2


# ------------------------------------------------------------------ reproduce leaves git clean


def _ignored(paths: list[str]) -> list[bool]:
    """Whether git ignores each path of this checkout."""
    res = subprocess.run(["git", "check-ignore", "--no-index", "-v", "-n", *paths], cwd=REPO, capture_output=True,
                         text=True, timeout=30)
    ignored = {line.split("\t")[-1] for line in res.stdout.splitlines() if not line.startswith("::")}
    return [p in ignored for p in paths]


def test_reproduce_writes_to_ignored_relative_places():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    suite = S.load_suite("quickstart", check_files=False)
    report, runs = S.report_dir(suite), S.default_out(suite)
    assert report == Path("reports/quickstart") and not runs.is_absolute()
    paths = [f"{report}/README.md", f"{report}/tables/scores_last.md", f"{report}/figures/learning_curves.png",
             f"{report}/runs.parquet", f"{runs}/iql/local_hopper-medium/seed0/summary.json"]
    assert _ignored(paths) == [True] * len(paths)
    assert _ignored(["results/quickstart/README.md"]) == [False]  # the committed evidence stays tracked


def test_report_files_hold_no_absolute_path(small_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "report"
    build_report(small_root, out, published="none", reps=50, curve_reps=20)
    for p in out.rglob("*"):
        if p.suffix in (".md", ".csv", ".tex"):
            assert str(tmp_path) not in p.read_text(), p.name
    runs = pd.read_parquet(out / "runs.parquet")
    assert runs["run_dir"].str.startswith("../runs/").all()
    assert (out / runs["run_dir"].iloc[0] / "summary.json").is_file()
    assert json.loads(runs["config"].iloc[0])["out"].startswith("../runs/")
    assert "Run records: `../runs`" in (out / "README.md").read_text()
    # the suite runner hands the report relative paths when they are under the working directory
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(reporting, "report_command", lambda: [sys.executable, str(FAKE_REPORT)])
    suite = S.load_suite("quickstart", check_files=False)
    assert S.report(suite, small_root.resolve()) == 0
    args = json.loads((tmp_path / "table.md").read_text())
    assert args["runs"] == "runs" and args["out"] == "."
