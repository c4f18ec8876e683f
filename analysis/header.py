"""What a report is about, stated on its first lines and in every caption.

Suite, budget spelled out as steps per phase (what each algorithm ran), seeds, evaluation episodes, commit, date and
device; warnings when the sample is small; the regime of each algorithm (offline, offline-to-online, online from
scratch) and the behaviour policy's normalised score of each dataset, the reference level of every table and figure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.aggregate import MIN_RUNS_FOR_INTERVALS
from analysis.collect import json_dict

ENDED = ("finished", "diverged")
REGIMES = ("offline", "offline-to-online", "online")
REGIME_LABELS = {"offline": "offline", "offline-to-online": "offline→online", "online": "online from scratch"}
REGIME_TAGS = {"offline": "offline", "offline-to-online": "off→on", "online": "from scratch"}  # in algorithm labels
REGIME_NOTE = "off→on: offline training, then online fine-tuning; from scratch: online training only, no dataset"


def regime_of(offline_score: Any, online_score: Any) -> str:
    """'offline-to-online', 'online' (from scratch) or 'offline', from which phases a run recorded a score in."""
    has_off = _finite(offline_score)
    has_on = _finite(online_score)
    if has_on:
        return "offline-to-online" if has_off else "online"
    return "offline"


def _finite(x: Any) -> bool:
    """Whether x is a finite number."""
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def with_regime(runs_df: pd.DataFrame) -> pd.DataFrame:
    """Copy of the runs with a `regime` column (see regime_of)."""
    off = runs_df["offline_score"] if "offline_score" in runs_df else pd.Series(np.nan, index=runs_df.index)
    on = runs_df["online_score"] if "online_score" in runs_df else pd.Series(np.nan, index=runs_df.index)
    return runs_df.assign(regime=[regime_of(a, b) for a, b in zip(off, on)])


def algorithm_regimes(runs_df: pd.DataFrame) -> dict[str, str]:
    """The regime of each algorithm: the most common one among its ended runs (all runs when none ended)."""
    if runs_df.empty:
        return {}
    df = with_regime(runs_df)
    out = {}
    for alg, g in df.groupby("algorithm", sort=True):
        ended = g[g["status"].isin(ENDED)] if "status" in g else g
        out[str(alg)] = str((ended if len(ended) else g)["regime"].mode().iloc[0])
    return out


def display_names(runs_df: pd.DataFrame) -> dict[str, str]:
    """Algorithm -> label: 'PPO (from scratch)', 'IQL (off→on)' where regimes are mixed (REGIME_NOTE says what the
    tags mean), the bare name where all algorithms share one regime."""
    regimes = algorithm_regimes(runs_df)
    if len(set(regimes.values())) <= 1:
        return {a: a for a in regimes}
    return {a: f"{a} ({REGIME_TAGS[r]})" for a, r in regimes.items()}


def behaviour_scores(datasets: Iterable[str]) -> dict[str, float]:
    """Normalised score of each dataset's behaviour policy, where the dataset's metadata has one."""
    from o2o.generate import behaviour_score

    out = {}
    for ds in sorted(set(map(str, datasets))):
        score = behaviour_score(ds)
        if score is not None:
            out[ds] = score
    return out


def _count(x: float) -> str:
    """An integer count with thousands separators, '–' when missing."""
    return f"{int(x):,}" if _finite(x) else "–"


def _span(values: Iterable[Any], fmt: Any = str) -> str:
    """The distinct values, formatted and joined ('1,000' or '1,000 / 2,000'); '–' when none."""
    vals = sorted({v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))})
    return " / ".join(fmt(v) for v in vals) if vals else "–"


def phase_steps(runs_df: pd.DataFrame, evals_df: pd.DataFrame) -> pd.DataFrame:
    """Per run, what it ran: offline gradient steps (last offline evaluation's step) and online env steps.

    Online env steps are the last online evaluation's env_steps; runs without evaluations fall back on the summary's
    `steps` (offline runs) and `env_steps` (runs with an online phase).
    """
    df = with_regime(runs_df)
    off = on = pd.Series(dtype=float)
    if not evals_df.empty:
        off = evals_df[evals_df["phase"] == "offline"].groupby("run_id")["step"].max()
        on = evals_df[evals_df["phase"] == "online"].groupby("run_id")["env_steps"].max()
    rows = []
    for r in df.itertuples(index=False):
        o = float(off.get(r.run_id, np.nan))
        n = float(on.get(r.run_id, np.nan))
        if not math.isfinite(o) and r.regime == "offline":
            o = float(getattr(r, "steps", np.nan))
        if not math.isfinite(n) and r.regime != "offline":
            n = float(getattr(r, "env_steps", np.nan))
        rows.append(dict(run_id=r.run_id, algorithm=r.algorithm, regime=r.regime, offline_steps=o,
                         online_env_steps=n if r.regime != "offline" else 0.0))
    return pd.DataFrame(rows, columns=["run_id", "algorithm", "regime", "offline_steps", "online_env_steps"])


@dataclass
class AlgorithmBudget:
    """What one algorithm ran in the report's runs."""

    algorithm: str
    regime: str
    budget: str
    offline_steps: str
    online_env_steps: str
    config_steps: str
    eval_episodes: str
    seeds: str
    runs: int

    def phases(self) -> str:
        """'1,000 gradient → 1,000 env steps', '4,096 env steps (online from scratch)' or '1,000 gradient steps'."""
        if self.regime == "online":
            return f"{self.online_env_steps} env steps (online from scratch)"
        if self.regime == "offline":
            return f"{self.offline_steps} gradient steps (offline only)"
        return f"{self.offline_steps} gradient → {self.online_env_steps} env steps"


@dataclass
class ReportHeader:
    """The facts every report starts with and every caption repeats in short."""

    suite: str
    description: str
    algorithms: list[AlgorithmBudget]
    seeds: list[int]
    runs_per_task: tuple[int, int]
    eval_episodes: str
    commits: list[str]
    run_dates: str
    made: str
    device: str
    min_seeds: int | None = None
    budgets: list[str] = field(default_factory=list)

    def budget_label(self) -> str:
        """'smoke', 'full', 'smoke / short' or 'not recorded'."""
        return " / ".join(self.budgets) or "not recorded"

    def seeds_text(self) -> str:
        """'2 seeds per algorithm and dataset (0, 1)' or '2–5 seeds ...'."""
        lo, hi = self.runs_per_task
        n = f"{lo}" if lo == hi else f"{lo}–{hi}"
        shown = ", ".join(map(str, self.seeds[:12])) + (", …" if len(self.seeds) > 12 else "")
        return f"{n} seed{'s' if hi != 1 else ''} per algorithm and dataset ({shown})"

    def caption(self, algorithms: Iterable[str] | None = None) -> str:
        """The budget in one paragraph, for table captions and figure footers (of `algorithms`, default all)."""
        keep = None if algorithms is None else set(algorithms)
        groups: dict[str, list[str]] = {}
        for a in self.algorithms:
            if keep is not None and a.algorithm not in keep:
                continue
            groups.setdefault(a.phases(), []).append(a.algorithm)
        parts = "; ".join(f"{', '.join(names)} {phases}" for phases, names in groups.items())
        mixed = len({a.regime for a in self.algorithms if keep is None or a.algorithm in keep}) > 1
        episodes = ("evaluation episodes not recorded" if self.eval_episodes == "–"
                    else f"{self.eval_episodes} evaluation episodes")
        return (f"Budget {self.budget_label()}: {parts}. {self.seeds_text()[0].upper()}{self.seeds_text()[1:]}; "
                f"{episodes}." + (f" Labels: {REGIME_NOTE}." if mixed else ""))

    def warnings(self) -> list[str]:
        """The warnings the report opens with: few seeds, small samples, a reduced budget."""
        out = []
        lo = self.runs_per_task[0]
        if self.min_seeds is not None and lo < self.min_seeds:
            out.append(f"**Fewer seeds than the suite asks for**: {lo} run(s) per algorithm and dataset, the suite's "
                       f"`min_seeds` is {self.min_seeds}. Rankings and differences below are not established.")
        if 0 < lo < MIN_RUNS_FOR_INTERVALS:
            out.append(f"**Small sample**: {lo} run(s) per algorithm and dataset. A bootstrap interval from fewer "
                       f"than {MIN_RUNS_FOR_INTERVALS} runs is little more than their [min, max], so this report "
                       "prints point estimates without intervals there (marked `n < "
                       f"{MIN_RUNS_FOR_INTERVALS}`) and draws no interval bars or bands for them.")
        reduced = [b for b in self.budgets if b != "full"]
        if reduced:
            out.append(f"**Budget {' / '.join(reduced)}**, not the published step counts (`full`): the scores check "
                       "the pipeline and are not comparable with published numbers.")
        return out

    def markdown(self) -> list[str]:
        """The header as Markdown lines: facts, the per-algorithm budget table, then the warnings."""
        lines = [f"- **Suite**: {self.suite}" + (f" — {self.description}" if self.description else ""),
                 f"- **Budget**: {self.budget_label()}, steps per phase in the table below (offline: gradient steps "
                 "up to the last offline evaluation; online: environment steps)",
                 f"- **Seeds**: {self.seeds_text()}",
                 f"- **Evaluation episodes**: {self.eval_episodes} per evaluation",
                 f"- **Commit**: {', '.join(self.commits) or 'not recorded'}",
                 f"- **Date**: runs {self.run_dates}; report made {self.made}",
                 f"- **Device**: {self.device}", "",
                 "| Algorithm | regime | budget | offline gradient steps | online env steps | step fields of the "
                 "config | eval episodes | seeds | runs |",
                 "|:---|:---|:---|---:|---:|:---|---:|:---|---:|"]
        lines += [f"| {a.algorithm} | {REGIME_LABELS.get(a.regime, a.regime)} | {a.budget} | {a.offline_steps} | "
                  f"{a.online_env_steps} | {a.config_steps} | {a.eval_episodes} | {a.seeds} | {a.runs} |"
                  for a in self.algorithms]
        warn = self.warnings()
        if warn:
            lines += [""] + [f"> ⚠ {w}" + ("  " if i < len(warn) - 1 else "") for i, w in enumerate(warn)]
        return lines


def _step_fields(configs: Sequence[dict[str, Any]]) -> str:
    """The config's non-zero step-count fields (names ending in `_steps`) with their values: 'offline_steps=1000'."""
    keys = sorted({k for c in configs for k, v in c.items()
                   if k.endswith("_steps") and isinstance(v, int) and not isinstance(v, bool) and v})
    return ", ".join(f"{k}={_span([c.get(k) for c in configs])}" for k in keys) or "–"


def _eval_episodes(configs: Sequence[dict[str, Any]]) -> str:
    """'2', or '2 (final 100)' where a final evaluation with more episodes was configured."""
    text = _span([c.get("eval_episodes") for c in configs])
    final = _span([c.get("final_eval_episodes") for c in configs if c.get("final_eval_episodes")])
    return text if final == "–" else f"{text} (final {final})"


def _device(runs_df: pd.DataFrame, configs: Sequence[dict[str, Any]]) -> str:
    """The devices the runs recorded; the requested one, marked, for records that predate the `device` field."""
    recorded = runs_df["device"].dropna().astype(str).tolist() if "device" in runs_df else []
    if recorded:
        return _span(recorded)
    asked = _span([c.get("device") for c in configs])
    return f"{asked} (requested; the resolved device is not in these records)" if asked != "–" else "not recorded"


def _dates(runs_df: pd.DataFrame) -> str:
    """'2026-11-21' or '2026-11-20 to 2026-11-21' from the runs' updated_at; 'not recorded' without it."""
    if "updated_at" not in runs_df:
        return "not recorded"
    days = sorted({str(v)[:10] for v in runs_df["updated_at"].dropna() if str(v)[:4].isdigit()})
    if not days:
        return "not recorded"
    return days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"


def _commits(runs_df: pd.DataFrame) -> list[str]:
    """Each recorded commit (12 characters, '-dirty' kept) with its number of runs."""
    if "git_commit" not in runs_df:
        return []
    counts = runs_df["git_commit"].dropna().astype(str).value_counts()
    return [f"`{c[:12]}{'-dirty' if c.endswith('-dirty') else ''}` ({n} run{'s' if n != 1 else ''})"
            for c, n in sorted(counts.items())]


def report_header(runs_df: pd.DataFrame, evals_df: pd.DataFrame, suite: str, description: str = "",
                  min_seeds: int | None = None, made: str | None = None) -> ReportHeader:
    """The header of a report on `runs_df` (ended runs; all runs when none ended)."""
    df = runs_df[runs_df["status"].isin(ENDED)] if "status" in runs_df and runs_df["status"].isin(ENDED).any() \
        else runs_df
    steps = phase_steps(df, evals_df) if not df.empty else pd.DataFrame(columns=["run_id"])
    regimes = algorithm_regimes(df)
    algs = []
    for alg, g in df.groupby("algorithm", sort=True):
        configs = [json_dict(c) for c in g["config"]] if "config" in g else []
        s = steps[steps["run_id"].isin(g["run_id"])]
        algs.append(AlgorithmBudget(
            algorithm=str(alg), regime=regimes[str(alg)], budget=_span(g["budget"]) if "budget" in g else "–",
            offline_steps=_span(s["offline_steps"], _count), online_env_steps=_span(s["online_env_steps"], _count),
            config_steps=_step_fields(configs), eval_episodes=_eval_episodes(configs),
            seeds=", ".join(map(str, sorted(set(g["seed"])))), runs=len(g)))
    per_task = df.groupby(["algorithm", "dataset"]).size() if not df.empty else pd.Series(dtype=int)
    configs = [json_dict(c) for c in df["config"]] if "config" in df else []
    budgets = sorted({str(b) for b in df["budget"].dropna()}) if "budget" in df else []
    return ReportHeader(
        suite=suite, description=description, algorithms=algs, seeds=sorted({int(s) for s in df["seed"]}),
        runs_per_task=(int(per_task.min()), int(per_task.max())) if len(per_task) else (0, 0),
        eval_episodes=_eval_episodes(configs), commits=_commits(df), run_dates=_dates(df),
        made=made or time.strftime("%Y-%m-%d"), device=_device(df, configs), min_seeds=min_seeds, budgets=budgets)
