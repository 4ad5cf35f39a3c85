"""TTA result.json files → a tidy CSV → tables in the TTA papers' layout, plots, and the papers' claims.

Main tables (as in Tent/EATA/CoTTA): one per source × scenario, rows methods, columns shifts, then
the mean; each cell is the online error (%) at the table's severity, mean ± std over seeds. A summary
table gives the mean error of every method in every scenario. The papers' absolute numbers
(CIFAR-10-C, ImageNet-C) are listed with their settings and marked "not run here" unless a grid
mirrors them; their *orderings* (e.g. EATA below Tent in the continual scenario) are checked on ours.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from adaptbench.claims import DEFAULT_DIR, load_claims_file  # noqa: E402
from adaptbench.collate import collate  # noqa: E402
from adaptbench.results import atomic_write_text  # noqa: E402

COLUMNS = ["label", "method", "source", "suite", "scenario", "mode", "batch_size", "seed", "shift", "severity",
           "error", "synthetic", "source_clean_error", "seconds", "kept_fraction", "git_commit", "path"]


def tta_frame(tidy: pd.DataFrame) -> pd.DataFrame:
    """The TTA view of the tidy table (adaptbench.collate): one row per cell × shift × severity, from the
    ``error/<shift>/<severity>`` metrics and the cells' facets (scenario, mode, batch size, ...)."""
    rows = tidy[(tidy["track"] == "tta") & (tidy["status"] == "ok")].copy()
    parts = rows["metric"].astype(str).str.split("/", expand=True)
    if rows.empty or parts.shape[1] < 3:
        return pd.DataFrame(columns=COLUMNS)
    rows = rows[(parts[0] == "error") & parts[2].notna()].copy()
    parts = parts.loc[rows.index]
    rows["shift"], rows["severity"], rows["error"] = parts[1], parts[2].astype(int), rows["value"].astype(float)
    rows["source"], rows["suite"] = rows["model"], rows["task"]
    frame = rows.reindex(columns=COLUMNS)
    return frame.sort_values(["source", "scenario", "label", "seed", "shift", "severity"])


def collate_tta(paths, out: str | Path | None = None) -> pd.DataFrame:
    """TTA result records → the TTA view of the tidy table."""
    frame = tta_frame(collate(paths))
    if out is not None:
        atomic_write_text(out, frame.to_csv(index=False))
    return frame


def tidy_or_tta(frame: pd.DataFrame) -> pd.DataFrame:
    """Accept the tidy table (the workflow's) or an already TTA-shaped one (``collate_tta``)."""
    return tta_frame(frame) if "metric" in frame.columns else frame


def method_order(grid: dict) -> list[str]:
    return [m if isinstance(m, str) else m["name"] for m in grid["methods"]]


def pm(mean: float, std: float) -> str:
    """mean ± std over seeds; a single seed has no spread to show (std is NaN)."""
    return f"{mean:.1f}" if pd.isna(std) else f"{mean:.1f} ± {std:.1f}"


def shift_table(cells: pd.DataFrame, severity: int, order: list[str]) -> pd.DataFrame:
    """Rows methods, columns shifts + Mean: online error (%), mean ± std over seeds."""
    sub = cells[cells["severity"] == severity]
    per_seed = sub.pivot_table(index=["label", "seed"], columns="shift", values="error", aggfunc="mean") * 100
    per_seed["Mean"] = per_seed.mean(axis=1)
    mean, std = per_seed.groupby("label").mean(), per_seed.groupby("label").std()
    table = pd.DataFrame({c: [pm(mean.loc[m, c], std.loc[m, c]) for m in mean.index] for c in mean.columns},
                         index=mean.index)
    return table.loc[[m for m in order if m in table.index]]


def scenario_means(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean error over shifts and severities per (source, scenario, label, seed), × 100."""
    return (cells.groupby(["source", "scenario", "label", "seed"])["error"].mean() * 100).reset_index()


def summary_table(cells: pd.DataFrame, source: str, order: list[str], scenario_order: list[str]) -> pd.DataFrame:
    means = scenario_means(cells[cells["source"] == source])
    g = means.groupby(["label", "scenario"])["error"]
    mean, std = g.mean().unstack(), g.std().unstack()
    cols = [s for s in scenario_order if s in mean.columns]
    table = pd.DataFrame({c: [pm(mean.loc[m, c], std.loc[m, c]) if pd.notna(mean.loc[m, c]) else "–"
                              for m in mean.index] for c in cols}, index=mean.index)
    return table.loc[[m for m in order if m in table.index]]


def check_ordering(rule: dict, cells: pd.DataFrame) -> tuple[str, str]:
    """A paper's ordering on our numbers → (what we measured, verdict). Kinds:
    less: error(better) < error(worse) in ``scenario``;
    degrades_less: error rises less for ``better`` than for ``worse`` from ``reference`` to ``scenario``."""
    means = scenario_means(cells)
    err = means.groupby(["scenario", "label"])["error"].mean()

    def e(scenario, label):
        return err.get((scenario, label))

    better, worse, scen = rule["better"], rule["worse"], rule["scenario"]
    if rule["kind"] == "less":
        a, b = e(scen, better), e(scen, worse)
        if a is None or b is None:
            return "not run", "not run here"
        return f"{better} {a:.2f} vs {worse} {b:.2f}", "holds" if a < b else "does not hold"
    ref = rule["reference"]
    vals = [e(scen, better), e(ref, better), e(scen, worse), e(ref, worse)]
    if any(v is None for v in vals):
        return "not run", "not run here"
    da, db = vals[0] - vals[1], vals[2] - vals[3]
    return (f"{better} {vals[1]:.2f}→{vals[0]:.2f} (Δ {da:+.2f}), {worse} {vals[3]:.2f}→{vals[2]:.2f} (Δ {db:+.2f})",
            "holds" if da < db else "does not hold")


def plot_severity(cells: pd.DataFrame, source: str, scenario: str, order: list[str], path: Path) -> bool:
    sub = cells[(cells["source"] == source) & (cells["scenario"] == scenario)]
    if sub["severity"].nunique() < 2:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label in [m for m in order if m in set(sub["label"])]:
        s = sub[sub["label"] == label].groupby(["severity", "seed"])["error"].mean().groupby("severity")
        ax.errorbar(s.mean().index, s.mean().values * 100, yerr=s.std().fillna(0).values * 100, label=label,
                    marker="o", capsize=2)
    ax.set_xlabel("severity")
    ax.set_ylabel("online error (%)")
    ax.set_title("\n".join(textwrap.wrap(f"{source}, {scenario}: error vs severity", 50)), fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_tta_report(cells_csv: str | Path, grid: dict, out_dir: str | Path, claims_dir=None,
                     unavailable: dict | None = None) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tidy = cells_csv if isinstance(cells_csv, pd.DataFrame) else pd.read_csv(cells_csv)
    cells = tidy_or_tta(tidy)
    unavailable = unavailable or {}
    if cells.empty and not unavailable:
        raise ValueError(f"{cells_csv}: no TTA results to report")
    rep = grid.get("report") or {}
    order = method_order(grid)
    scen_order = [s["name"] for s in grid["scenarios"]]
    written, lines = [], [f"# {rep.get('title', grid['grid'])}", ""]
    if cells["synthetic"].any():
        lines += ["> **SYNTHETIC data** in some streams (generated by adaptbench): not comparable with any paper.", ""]
    lines += ["Online error (%, lower is better): each sample is scored by the prediction made when its batch "
              "arrived. Mean ± std over seeds " + ", ".join(map(str, sorted(cells["seed"].unique()))) + ".", ""]
    if unavailable:
        lines += ["Sources not run (data not available here; nothing substituted):", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in unavailable.items()] + [""]
    not_done = (tidy[tidy["status"] != "ok"].drop_duplicates(["config_hash"])  # failure.json: the job's reason
                if {"status", "config_hash"} <= set(tidy.columns) else tidy.iloc[:0])
    if not not_done.empty:
        lines += ["Cells without a score (left out of the tables; a rerun retries them):", ""]
        lines += [f"- {r.label} / {r.model} / {r.task} / seed {r.seed}: **{r.status}** — {r.reason}"
                  for r in not_done.itertuples()] + [""]
    for source in cells["source"].unique():
        sub = cells[cells["source"] == source]
        clean = sub["source_clean_error"].dropna()
        lines += [f"## {source} ({sub['suite'].iloc[0]})", ""]
        if len(clean):
            lines += [f"Source model's error on the clean test stream: {100 * clean.iloc[0]:.1f}%.", ""]
        summary = summary_table(cells, source, order, scen_order)
        lines += ["### Mean error per scenario (over shifts and severities)", "", summary.to_markdown(), ""]
        atomic_write_text(out_dir / f"{source}_summary.csv", summary.to_csv())
        for scenario in [s for s in scen_order if s in set(sub["scenario"])]:
            ss = sub[sub["scenario"] == scenario]
            sev = int(ss["severity"].max())
            table = shift_table(ss, sev, order)
            mode, bs = ss["mode"].iloc[0], int(ss["batch_size"].iloc[0])
            lines += [f"### {scenario} ({mode}, batch size {bs}), severity {sev}", "", table.to_markdown(), ""]
            atomic_write_text(out_dir / f"{source}_{scenario}.csv", table.to_csv())
            png = out_dir / f"{source}_{scenario}_severity.png"
            if plot_severity(cells, source, scenario, order, png):
                lines += [f"![error vs severity]({png.name})", ""]
                written.append(png)
    papers = [rep["claims"]] if isinstance(rep.get("claims"), str) else list(rep.get("claims") or [])
    if papers:
        lines += ["## The papers' claims", ""]
        for paper in papers:
            data = load_claims_file(Path(claims_dir or DEFAULT_DIR) / f"{paper}.yaml")
            lines += [f"### {data['paper']['title']} (arXiv:{data['paper']['arxiv']}), {data['table']}", "",
                      f"Setting: {data['setting']}", ""]
            absolute = pd.DataFrame([{"method": c["method"], "model": c["model"], "benchmark": c["task"],
                                      "metric": c["metric"], "paper": c["value"],
                                      "ours": "not run here: " + rep.get("not_comparable_reason", "data not available")}
                                     for c in data["claims"]])
            lines += [absolute.to_markdown(index=False), ""]
            checks = []
            for rule in data.get("orderings", []):
                for source in cells["source"].unique():
                    measured, verdict = check_ordering(rule, cells[cells["source"] == source])
                    checks.append({"claim": rule["text"], "source": source, "ours": measured, "verdict": verdict})
            if checks:
                lines += ["Orderings checked on our streams:", "", pd.DataFrame(checks).to_markdown(index=False), ""]
    lines += [f"- {n}" for n in rep.get("notes", [])]
    readme = out_dir / "README.md"
    atomic_write_text(readme, "\n".join(lines) + "\n")
    return [readme, *written]
