"""analysis/: collecting synthetic run records, rliable aggregates, tables, figures and the report CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rliable import metrics

from analysis import aggregate, figures, tables
from analysis.collect import RunRecordWarning, collect, write_tables
from analysis.names import canonical_algorithm, domain_of
from analysis.published import load_published
from analysis.report import build_report, main

REPO = Path(__file__).resolve().parents[1]
REPS = 200
TASKS = ("hopper-medium-v2", "halfcheetah-medium-v2", "antmaze-umaze-v2")
BASE = {"IQL": 60.0, "CQL": 40.0, "FamO2O": 50.0}
TASK_OFFSET = {"hopper-medium-v2": 10.0, "halfcheetah-medium-v2": 0.0, "antmaze-umaze-v2": 20.0}
SEEDS = range(5)
OFFLINE_STEPS = (0, 250, 500, 750, 1000)
ONLINE_STEPS = (0, 500, 1000)


def final_score(alg: str, task: str, seed: int) -> float:
    """Known last score of a synthetic run."""
    return BASE[alg] + TASK_OFFSET[task] + seed


def write_run(root: Path, alg: str, task: str, seed: int, last: float | None = None, online: bool = True,
              beta: bool = False, status: str = "finished") -> Path:
    """One run directory in the suite layout with summary.json and evals.csv."""
    d = root / "suite" / "runs" / alg / task / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    last = final_score(alg, task, seed) if last is None else last
    off_last = last - 5.0 if online else last
    rows = []
    for k, step in enumerate(OFFLINE_STEPS):
        s = off_last * (k + 1) / len(OFFLINE_STEPS)
        rows.append(dict(step=step, phase="offline", env_steps=0, normalized_score=s, return_mean=10 * s,
                         return_std=1.0, success_rate=""))
    if online:
        for k, step in enumerate(ONLINE_STEPS):
            s = off_last + 5.0 * k / (len(ONLINE_STEPS) - 1)
            row = dict(step=step, phase="online", env_steps=step, normalized_score=s, return_mean=10 * s,
                       return_std=1.0, success_rate="")
            if beta:
                b = 1.0 + 0.1 * seed + 0.05 * k
                row.update(beta_mean=b, beta_std=0.2, beta_q10=b - 0.3, beta_q50=b, beta_q90=b + 0.3)
            rows.append(row)
    pd.DataFrame(rows).to_csv(d / "evals.csv", index=False)
    scores = [r["normalized_score"] for r in rows]
    summary = dict(algorithm=alg, dataset=task, seed=seed, status=status, last_score=last, best_score=max(scores),
                   offline_score=off_last, online_score=last if online else None,
                   offline_best=max(scores[:len(OFFLINE_STEPS)]), online_best=max(scores[len(OFFLINE_STEPS):])
                   if online else None, wall_time_s=12.5, steps=2000, env_steps=1000, budget={"steps": 2000},
                   config={"lr": 3e-4, "net": [256, 256]}, versions={"torch": "2"}, git_commit="abc", error=None)
    (d / "summary.json").write_text(json.dumps(summary))
    return d


@pytest.fixture()
def runs_root(tmp_path) -> Path:
    root = tmp_path / "results"
    for alg in BASE:
        for task in TASKS:
            for seed in SEEDS:
                write_run(root, alg, task, seed, beta=alg == "FamO2O")
    return root


@pytest.fixture()
def collected(runs_root):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RunRecordWarning)
        return collect(runs_root)


# ------------------------------------------------------------------ collect


def test_collect_one_row_per_run_and_eval(collected):
    runs, evals = collected
    assert len(runs) == len(BASE) * len(TASKS) * len(SEEDS)
    assert set(runs["algorithm"]) == set(BASE)
    assert runs["seed"].dtype.kind == "i"
    r = runs[(runs["algorithm"] == "IQL") & (runs["dataset"] == "hopper-medium-v2") & (runs["seed"] == 3)].iloc[0]
    assert r["last_score"] == final_score("IQL", "hopper-medium-v2", 3)
    assert r["domain"] == "locomotion"
    assert json.loads(r["config"]) == {"lr": 3e-4, "net": [256, 256]}
    assert set(runs.loc[runs["dataset"] == "antmaze-umaze-v2", "domain"]) == {"antmaze"}
    assert len(evals) == len(runs) * (len(OFFLINE_STEPS) + len(ONLINE_STEPS))
    for col in ("algorithm", "dataset", "seed", "phase", "step", "normalized_score", "run_id"):
        assert col in evals.columns
    assert set(evals["phase"]) == {"offline", "online"}
    fam = evals[evals["algorithm"] == "FamO2O"]
    assert fam.loc[fam["phase"] == "online", "beta_mean"].notna().all()
    assert evals.loc[evals["algorithm"] == "IQL", "beta_mean"].isna().all()


def test_domain_of_handles_local_and_unknown_names():
    assert domain_of("hopper-medium-v2") == "locomotion"
    assert domain_of("kitchen-mixed-v0") == "kitchen"
    assert domain_of("local:hopper-medium") == "locomotion"
    assert domain_of("local:walker2d-weird") == "locomotion"  # not a registered local name, family still known
    assert domain_of("pen-human-v0") == "adroit"  # unregistered version of a known family
    assert domain_of("my-own-task") == "other"
    assert domain_of("") == "other"


def test_malformed_records_are_skipped_with_a_warning(runs_root):
    bad = runs_root / "suite" / "runs" / "IQL" / "broken"
    (bad / "a").mkdir(parents=True)
    (bad / "a" / "summary.json").write_text('{"algorithm": "IQL", "dataset": "hopper-med')  # truncated write
    (bad / "b").mkdir()
    (bad / "b" / "summary.json").write_text(json.dumps({"algorithm": "IQL", "dataset": "hopper-medium-v2"}))
    (bad / "c").mkdir()
    (bad / "c" / "summary.json").write_text("[1, 2]")
    d = write_run(runs_root, "CQL", "hopper-medium-v2", 99)
    (d / "evals.csv").write_text("foo,bar\n1,2\n")
    with pytest.warns(RunRecordWarning) as rec:
        runs, evals = collect(runs_root)
    msgs = " ".join(str(w.message) for w in rec)
    assert "unreadable summary" in msgs and "lacks seed" in msgs and "not a JSON object" in msgs
    assert "evals lack columns" in msgs
    assert len(runs) == len(BASE) * len(TASKS) * len(SEEDS) + 1  # seed 99 kept, the broken ones skipped
    assert not (evals["seed"] == 99).any()


def test_canonical_algorithm_names():
    assert canonical_algorithm("iql") == "IQL"
    assert canonical_algorithm("td3_bc") == "TD3+BC"
    assert canonical_algorithm("uni_o4") == "Uni-O4"
    assert canonical_algorithm("famo2o_iql") == "IQL+FamO2O"
    assert canonical_algorithm("famo2o_awac") == "AWAC+FamO2O"
    assert canonical_algorithm("SomethingNew") == "SomethingNew"


def test_collect_reads_what_the_run_recorder_writes(tmp_path):
    from o2o.records import RunRecorder

    rec = RunRecorder(tmp_path / "runs" / "famo2o-iql" / "hopper-medium-v2" / "seed0", "famo2o_iql",
                      "hopper-medium-v2", 0, {"lr": 1e-3}, budget="smoke")
    rec.log_eval(0, "offline", 0, 10.0, 100.0, 1.0)
    rec.log_eval(0, "online", 0, 20.0, 200.0, 1.0, beta_mean=1.0, beta_std=0.1, beta_q10=0.8, beta_q50=1.0,
                 beta_q90=1.2)
    rec.finish()
    RunRecorder(tmp_path / "runs" / "iql" / "local:hopper-medium" / "seed0", "iql", "local:hopper-medium", 0, {})
    runs, evals = collect(tmp_path / "runs")
    r = runs.set_index("algorithm_raw")
    assert r.loc["famo2o_iql", "algorithm"] == "IQL+FamO2O"
    assert r.loc["famo2o_iql", "online_score"] == 20.0 and r.loc["famo2o_iql", "offline_score"] == 10.0
    assert r.loc["iql", "status"] == "running" and r.loc["iql", "domain"] == "locomotion"
    assert "n_evals" in runs.columns and "updated_at" in runs.columns  # extra summary keys pass through
    assert evals["beta_mean"].notna().sum() == 1


def test_write_tables_parquet_and_csv(runs_root, tmp_path):
    paths = write_tables(runs_root, tmp_path / "out")
    for name in ("runs.parquet", "evals.parquet", "runs.csv", "evals.csv"):
        assert paths[name].exists()
    runs = pd.read_parquet(paths["runs.parquet"])
    assert len(runs) == len(BASE) * len(TASKS) * len(SEEDS)
    assert len(pd.read_parquet(paths["evals.parquet"])) == len(pd.read_csv(paths["evals.csv"]))


# ------------------------------------------------------------------ aggregate


def test_score_matrices_shape_and_values(collected):
    runs, _ = collected
    mats = aggregate.score_matrices(runs, "last_score")
    assert mats.tasks == sorted(TASKS)
    assert mats.algorithms == sorted(BASE)
    for alg in BASE:
        m = mats.scores[alg]
        assert m.shape == (len(SEEDS), len(TASKS))
        expect = np.array([[final_score(alg, t, s) for t in mats.tasks] for s in SEEDS])
        np.testing.assert_allclose(m, expect)
    assert mats.notes == []


def test_aggregates_equal_rliable_metrics(collected):
    runs, _ = collected
    mats = aggregate.score_matrices(runs, "last_score")
    met = aggregate.aggregate_metrics(mats, reps=REPS).set_index(["algorithm", "metric"])
    for alg, m in mats.scores.items():
        x = m / 100.0
        assert met.loc[(alg, "IQM"), "value"] == pytest.approx(100 * metrics.aggregate_iqm(x))
        assert met.loc[(alg, "Mean"), "value"] == pytest.approx(100 * metrics.aggregate_mean(x))
        assert met.loc[(alg, "Median"), "value"] == pytest.approx(100 * metrics.aggregate_median(x))
        assert met.loc[(alg, "Optimality Gap"), "value"] == pytest.approx(
            100 * metrics.aggregate_optimality_gap(x, 1.0))
        for metric in aggregate.METRICS:
            r = met.loc[(alg, metric)]
            assert r["ci_low"] <= r["value"] + 1e-9 and r["value"] <= r["ci_high"] + 1e-9
    # known values: mean over runs and tasks of BASE + offsets + seed
    assert met.loc[("IQL", "Mean"), "value"] == pytest.approx(60 + 10 + 2)
    assert met.loc[("IQL", "Optimality Gap"), "value"] == pytest.approx(100 - 72)


def _runs_from_matrix(alg: str, matrix: np.ndarray, tasks=("t-a", "t-b")) -> pd.DataFrame:
    rows = []
    for s in range(matrix.shape[0]):
        for j, t in enumerate(tasks):
            rows.append(dict(run_id=f"{alg}/{t}/{s}", algorithm=alg, dataset=t, domain="other", seed=s,
                             status="finished", last_score=float(matrix[s, j])))
    return pd.DataFrame(rows)


def test_hand_computed_iqm():
    # 4 runs x 2 tasks = 8 scores; IQM drops the 2 lowest and 2 highest and averages the middle 4.
    m = np.array([[-1000.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 1000.0]])
    mats = aggregate.score_matrices(_runs_from_matrix("X", m), "last_score")
    met = aggregate.aggregate_metrics(mats, reps=REPS).set_index("metric")
    assert met.loc["IQM", "value"] == pytest.approx((2 + 3 + 4 + 5) / 4)
    assert met.loc["Mean", "value"] == pytest.approx(np.mean(m))
    task_means = m.mean(axis=0)  # median of per-task means
    assert met.loc["Median", "value"] == pytest.approx(np.median(task_means))
    assert aggregate.iqm(np.arange(8) * 10.0) == pytest.approx(35.0)


def test_unequal_seeds_are_trimmed_and_missing_tasks_dropped(collected):
    runs, _ = collected
    drop_seed = (runs["algorithm"] == "CQL") & (runs["dataset"] == "hopper-medium-v2") & (runs["seed"] == 4)
    runs2 = runs[~drop_seed]
    mats = aggregate.score_matrices(runs2, "last_score")
    assert mats.scores["CQL"].shape == (4, 3)
    assert mats.scores["IQL"].shape == (5, 3)
    assert any("trimmed to 4" in n for n in mats.notes)
    assert any("differ" in n for n in mats.notes)
    met = aggregate.aggregate_metrics(mats, reps=REPS)
    assert set(met.loc[met["algorithm"] == "CQL", "n_runs"]) == {4}
    # a task only one algorithm has is dropped for everyone, with a note
    extra = runs.iloc[[0]].assign(dataset="walker2d-medium-v2", run_id="extra")
    mats = aggregate.score_matrices(pd.concat([runs, extra]), "last_score")
    assert "walker2d-medium-v2" not in mats.tasks
    assert any("walker2d-medium-v2" in n for n in mats.notes)


def test_failed_runs_are_excluded(collected):
    runs, _ = collected
    runs = runs.copy()
    runs.loc[runs.index[0], "status"] = "failed"
    mats = aggregate.score_matrices(runs, "last_score")
    assert mats.scores[runs.iloc[0]["algorithm"]].shape[0] == len(SEEDS) - 1


def test_probability_of_improvement_and_profiles(collected):
    runs, _ = collected
    mats = aggregate.score_matrices(runs, "last_score")
    poi = aggregate.probability_of_improvement(mats, [("IQL", "CQL"), ("CQL", "IQL"), ("IQL", "FamO2O")],
                                               reps=REPS)
    p = poi.set_index(["algorithm_x", "algorithm_y"])["probability"]
    # every IQL score beats every CQL score (60+ vs at most 44+20): P = 1
    assert p[("IQL", "CQL")] == pytest.approx(1.0)
    assert p[("CQL", "IQL")] == pytest.approx(0.0)
    expect = np.mean([metrics.probability_of_improvement(mats.scores["IQL"][:, [j]] / 100,
                                                         mats.scores["FamO2O"][:, [j]] / 100) for j in range(3)])
    assert p[("IQL", "FamO2O")] == pytest.approx(expect)
    assert len(aggregate.probability_of_improvement(mats, reps=REPS)) == 3  # all pairs by default
    prof = aggregate.performance_profiles(mats, taus=[0.0, 65.0, 1000.0], reps=REPS)
    f = prof.set_index(["algorithm", "tau"])["fraction"]
    assert f[("IQL", 0.0)] == 1.0 and f[("IQL", 1000.0)] == 0.0
    iql = mats.scores["IQL"]
    assert f[("IQL", 65.0)] == pytest.approx(np.mean(iql > 65.0))


# ------------------------------------------------------------------ tables


def test_per_dataset_table_and_totals(collected):
    runs, _ = collected
    table = tables.per_dataset(runs, ("last_score", "best_score"))
    r = table[(table["algorithm"] == "IQL") & (table["dataset"] == "hopper-medium-v2")
              & (table["metric"] == "last_score")].iloc[0]
    vals = [final_score("IQL", "hopper-medium-v2", s) for s in SEEDS]
    assert r["mean"] == pytest.approx(np.mean(vals)) and r["std"] == pytest.approx(np.std(vals, ddof=1))
    assert r["n"] == 5
    tot = tables.domain_totals(table)
    loco = tot[(tot["algorithm"] == "IQL") & (tot["metric"] == "last_score") & (tot["domain"] == "locomotion")]
    assert loco["total"].iloc[0] == pytest.approx(72 + 62)  # hopper 70+2, halfcheetah 60+2
    assert bool(loco["complete"].iloc[0])
    header, rows, _ = tables.score_table_rows(table, "last_score")
    assert header == ["Dataset", "CQL", "FamO2O", "IQL"]
    md = tables.markdown_table(header, rows)
    assert "72.0 ± 1.6" in md and "locomotion total" in md
    tex = tables.latex_table(header, rows, "cap")
    assert r"72.0 $\pm$ 1.6" in tex and r"\toprule" in tex


def test_comparison_with_published(collected, tmp_path):
    runs, _ = collected
    pub = load_published("corl_*")
    comp = tables.compare_published(runs, pub)
    row = comp[(comp["algorithm"] == "IQL") & (comp["dataset"] == "hopper-medium-v2") & (comp["phase"] == "offline")
               & (comp["source"] != "")]
    assert len(row) == 1
    ours = np.mean([final_score("IQL", "hopper-medium-v2", s) - 5 for s in SEEDS])  # offline_score = last - 5
    assert row["published"].iloc[0] == pytest.approx(67.53)
    assert row["diff"].iloc[0] == pytest.approx(ours - 67.53)
    # FamO2O has no CORL number but still appears
    assert "FamO2O" in set(comp["algorithm"])
    assert comp.loc[comp["algorithm"] == "FamO2O", "published"].isna().all()
    paths = tables.write_all_tables(runs, tmp_path / "t", pub)
    md = paths["published_comparison.md"].read_text()
    assert "67.53 ± 3.78" in md and f"{ours - 67.53:+.2f}" in md
    assert "\\pm" in paths["published_comparison.tex"].read_text()
    # the row says which preset source made it (config `preset`)
    tagged = runs.assign(config=np.where(runs["algorithm"] == "IQL", '{"preset": "corl"}', '{}'))
    comp = tables.compare_published(tagged, pub)
    assert set(comp.loc[comp["algorithm"] == "IQL", "preset"]) == {"corl"}
    assert set(comp.loc[comp["algorithm"] == "FamO2O", "preset"]) == {""}
    header, rows = tables.comparison_rows(comp[comp["algorithm"] == "IQL"])
    assert header[2] == "Preset" and all(r[2] == "corl" for r in rows)


def test_comparison_matches_lowercase_algorithm_names(collected):
    runs, _ = collected
    runs = runs.assign(algorithm=runs["algorithm"].str.lower())
    comp = tables.compare_published(runs, load_published("corl_offline"))
    sel = (comp["algorithm"] == "iql") & (comp["dataset"] == "hopper-medium-v2") & (comp["phase"] == "offline")
    assert comp.loc[sel, "published"].tolist() == [67.53]


# ------------------------------------------------------------------ figures and report


def test_learning_curves_and_beta(collected, tmp_path):
    _, evals = collected
    curves = figures.learning_curve_data(evals, reps=50)
    c = curves[(curves["algorithm"] == "IQL") & (curves["dataset"] == "hopper-medium-v2")]
    # offline points at their gradient steps, online points at their env steps: two axes, no offset
    assert sorted(c.loc[c["phase"] == "offline", "x"]) == list(OFFLINE_STEPS)
    assert sorted(c.loc[c["phase"] == "online", "x"]) == list(ONLINE_STEPS)
    last = c[(c["phase"] == "online") & (c["x"] == ONLINE_STEPS[-1])]
    vals = [final_score("IQL", "hopper-medium-v2", s) for s in SEEDS]
    assert last["iqm"].iloc[0] == pytest.approx(aggregate.iqm(np.array(vals)))
    assert c["ci_low"].notna().all() and c["n_seeds"].eq(len(SEEDS)).all()  # enough seeds: a band everywhere
    assert (c["ci_low"] <= c["iqm"] + 1e-9).all() and (c["iqm"] <= c["ci_high"] + 1e-9).all()
    paths = figures.plot_learning_curves(evals, tmp_path / "curves", curves=curves)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
    beta = figures.plot_beta(evals, tmp_path / "beta")
    assert len(beta) == 2 and all(p.exists() for p in beta)
    assert figures.plot_beta(evals.drop(columns=[c for c in evals.columns if c.startswith("beta_")]),
                             tmp_path / "nobeta") == []


def test_beta_over_states_from_betas_npy(tmp_path):
    """Each run's betas.npy becomes a per-state table and one histogram panel per dataset; runs without it skipped."""
    rows = []
    for ds, seed, lo in [("hopper-medium", 0, 1.0), ("hopper-medium", 1, 2.0), ("walker2d-medium", 0, 3.0)]:
        d = tmp_path / f"{ds}_{seed}"
        d.mkdir()
        np.save(d / "betas.npy", np.linspace(lo, lo + 1.0, 101).astype(np.float32))
        rows.append({"dataset": ds, "algorithm": "FamO2O", "seed": seed, "run_dir": str(d)})
    (tmp_path / "iql").mkdir()
    rows.append({"dataset": "hopper-medium", "algorithm": "IQL", "seed": 0, "run_dir": str(tmp_path / "iql")})
    states = figures.beta_states(pd.DataFrame(rows))
    assert len(states) == 3 * 101 and set(states["algorithm"]) == {"FamO2O"}
    med = states.groupby(["dataset", "seed"])["beta"].median()
    assert med[("hopper-medium", 1)] == pytest.approx(2.5) and med[("walker2d-medium", 0)] == pytest.approx(3.5)
    paths = figures.plot_beta_states(states, tmp_path / "beta_states")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
    assert figures.plot_beta_states(figures.beta_states(pd.DataFrame(rows[-1:])), tmp_path / "none") == []


def test_report_cli_produces_files(runs_root, tmp_path):
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "analysis.report", str(runs_root), "--out", str(out), "--published", "corl_*",
           "--suite", "suite", "--reps", str(REPS), "--curve-reps", "50"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "[analysis.report]" in res.stdout and str(out) in res.stdout
    for rel in ("runs.parquet", "evals.parquet", "runs.csv", "evals.csv", "README.md",
                "tables/scores_last.md", "tables/scores_last.tex", "tables/scores_best.md", "tables/scores_best.tex",
                "tables/domain_totals.md", "tables/domain_totals.tex", "tables/published_comparison.md",
                "tables/published_comparison.tex", "tables/aggregate_last_score.csv",
                "figures/aggregate_last_score.png", "figures/aggregate_last_score.pdf",
                "figures/profile_last_score.png", "figures/poi_last_score.png", "figures/learning_curves.png",
                "figures/learning_curves.pdf", "figures/beta.png", "figures/beta.pdf"):
        assert (out / rel).exists(), rel
    readme = (out / "README.md").read_text()
    assert "figures/learning_curves.png" in readme and "tables/scores_last.md" in readme
    assert "67.53" in (out / "tables" / "published_comparison.md").read_text()


def test_extra_algorithm_appears_everywhere(runs_root, tmp_path):
    BASE["BrandNewAlgo"] = 30.0
    try:
        for task in TASKS:
            for seed in SEEDS:
                write_run(runs_root, "BrandNewAlgo", task, seed)
    finally:
        del BASE["BrandNewAlgo"]
    out = tmp_path / "report"
    written = build_report(runs_root, out, published="none", reps=100, curve_reps=20, pairs="BrandNewAlgo:IQL")
    for name in ("scores_last.md", "scores_last.tex", "scores_best.md", "domain_totals.md",
                 "domain_totals.tex", "aggregate_last_score.csv", "poi_last_score.csv", "profile_last_score.csv",
                 "learning_curves.csv", "per_dataset.csv"):
        assert "BrandNewAlgo" in (out / "tables" / name).read_text(), name
    assert "BrandNewAlgo" in (out / "README.md").read_text()
    assert len([p for p in written["figures"] if p.suffix == ".png"]) >= 4


def test_main_reports_missing_dir(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such runs directory" in capsys.readouterr().err
