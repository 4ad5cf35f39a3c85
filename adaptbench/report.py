"""Tidy cells + the papers' claims → tables in the papers' layout, a claims check, and plots.

Layout of the main table (as in LoRA's Table 2): rows are methods (per model), columns are tasks,
then Avg; each cell is mean ± std over seeds of the selected epoch, × 100. Where a paper reports
the same method × model × task, its number sits beside ours. Whether the comparison means anything
is the grid's call (``report.comparable``): a CPU subset run is shown as "not comparable", with why.
"""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from adaptbench import tasks  # noqa: E402
from adaptbench.claims import load_claims  # noqa: E402
from adaptbench.collate import completed  # noqa: E402
from adaptbench.results import atomic_write_text  # noqa: E402

SCALE = 100.0


def human_params(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}K"
    return str(int(n))


def human_bytes(n: float) -> str:
    """Optimizer state as the GaLore papers print memory: MiB below 1 GiB, else GiB."""
    if n >= 2**30:
        return f"{n / 2**30:.2f}G"
    return f"{n / 2**20:.1f}M" if n >= 2**20 else f"{n / 2**10:.1f}K"


UNSCALED = ("ppl", "loss")  # printed as is, lower is better; every other metric is a fraction × 100


@functools.lru_cache(maxsize=None)
def _main_metric(task: str) -> str:
    if task in tasks.list_tasks():
        return tasks.get_task(task).main_metric
    from adaptbench.tasks.corpora import get_corpus

    return get_corpus(task).main_metric


def table_metric(task: str, report_cfg: dict) -> str:
    """The metric a table shows for ``task``: the grid's choice, else the task's main metric (cached:
    a report asks once per row)."""
    return (report_cfg.get("metrics") or {}).get(task) or _main_metric(task)


def selected_scores(cells: pd.DataFrame, report_cfg: dict, selection: str) -> pd.DataFrame:
    """One row per (label, method, model, task, seed): the table metric of the selected epoch, × 100."""
    keep = cells[cells.apply(lambda r: r["metric"] == table_metric(r["task"], report_cfg), axis=1)].copy()
    column = {"last": "value", "best": "best"}[selection]  # tidy columns: final model, best epoch
    keep["score"] = keep[column].astype(float) * keep["metric"].map(lambda m: 1.0 if m in UNSCALED else SCALE)
    return keep


def aggregate(scores: pd.DataFrame) -> pd.DataFrame:
    g = scores.groupby(["label", "method", "model", "task"])
    out = g["score"].agg(mean="mean", std="std", median="median", n="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    params = g["trainable_params"].first().reset_index(drop=True)
    out["trainable_params"] = params.values
    if "optimizer_state_bytes" in scores:
        out["optimizer_state_bytes"] = g["optimizer_state_bytes"].median().reset_index(drop=True).values
    return out


AVG = "avg"  # claims[].task for a number the paper gives only as its average over the grid's tasks


def claim_verdict(ours: float | None, claim: dict, comparable: bool, reason: str) -> str:
    if ours is None:
        return "not run"
    if not comparable:
        return f"not comparable: {reason}"
    # within two of the paper's printed std (1 point when it prints none) counts as reproduced
    tolerance = max(2 * (claim.get("std") or 0.0), 1.0)
    return "reproduced" if abs(ours - claim["value"]) <= tolerance else f"not reproduced (|Δ| > {tolerance:.1f})"


def build_tables(cells: pd.DataFrame, grid: dict, claims: list[dict], unavailable: dict):
    report_cfg = grid.get("report", {}) or {}
    selection = (grid.get("train") or {}).get("selection", "best")
    scores = selected_scores(cells, report_cfg, selection)
    agg = aggregate(scores)
    task_order = [t for t in grid["tasks"] if t in set(agg["task"]) or t in unavailable]
    paper = report_cfg.get("claims")
    model_map = report_cfg.get("claims_model", {})
    comparable = bool(report_cfg.get("comparable", False))
    reason = report_cfg.get("not_comparable_reason", "the grid does not mirror the paper's setting")
    papers = [paper] if isinstance(paper, str) else list(paper or [])  # one claims file or several
    relevant = [c for c in claims if c["paper"] in papers]

    labels = set(agg["label"])

    def find_claim(label, method, model, task):
        want = model_map.get(model, model)
        metric = None if task == AVG else table_metric(task, report_cfg)
        hits = [c for c in relevant if c["model"] == want and c["task"] == task
                and (task == AVG or c["metric"] == metric)]
        # a claim names a grid label (a variant such as lora_g) or a registry name; the label wins
        return next((c for c in hits if c["method"] == label), None) or next(
            (c for c in hits if c["method"] == method and c["method"] not in labels), None)

    rows, verdicts = [], []
    for (label, method, model), block in agg.groupby(["label", "method", "model"], sort=False):
        row = {"method": label, "model": model, "#params": human_params(block["trainable_params"].iloc[0])}
        if "optimizer_state_bytes" in block and block["optimizer_state_bytes"].notna().any():
            row["opt. state"] = human_bytes(block["optimizer_state_bytes"].iloc[0])
        means = []
        for task in task_order:
            if task in unavailable:
                row[task] = "n/a"
                continue
            hit = block[block["task"] == task]
            if hit.empty:
                row[task] = "missing"
                continue
            m, s, n = hit["mean"].iloc[0], hit["std"].iloc[0], int(hit["n"].iloc[0])
            means.append(m)
            d = 2 if table_metric(task, report_cfg) in UNSCALED else 1  # perplexities near 3 need two decimals
            cell = f"{m:.{d}f} ± {s:.{d}f}" if n > 1 else f"{m:.{d}f}"
            claim = find_claim(label, method, model, task)
            if claim:
                cell += f" [paper {claim['value']:.1f}]"
                ours = hit["median" if claim["aggregate"] == "median" else "mean"].iloc[0]
                verdicts.append({"method": label, "model": model, "task": task, "metric": claim["metric"],
                                 "ours": round(float(ours), 2), "paper": claim["value"], "paper_std": claim.get("std"),
                                 "delta": round(float(ours) - claim["value"], 2), "seeds": n,
                                 "aggregate": claim["aggregate"],
                                 "verdict": claim_verdict(ours, claim, comparable, reason)})
            row[task] = cell
        complete = len(means) == len([t for t in task_order if t not in unavailable])
        avg_d = 2 if all(table_metric(t, report_cfg) in UNSCALED for t in task_order) else 1
        avg = sum(means) / len(means) if means and complete else None
        row["Avg"] = f"{avg:.{avg_d}f}" if avg is not None else "n/a"
        claim = find_claim(label, method, model, AVG)
        if claim:  # a paper that prints only its average (GradNormLoRP's abstract): every task must be in ours
            avg = avg if set(grid["tasks"]) <= set(block["task"]) else None
            row["Avg"] += f" [paper {claim['value']:.1f}]"
            verdicts.append({"method": label, "model": model, "task": AVG, "metric": claim["metric"],
                             "ours": None if avg is None else round(float(avg), 2), "paper": claim["value"],
                             "paper_std": claim.get("std"),
                             "delta": None if avg is None else round(float(avg) - claim["value"], 2),
                             "seeds": int(block["n"].min()), "aggregate": claim["aggregate"],
                             "verdict": claim_verdict(avg, claim, comparable, reason) if avg is not None
                             else "not run: the paper's average needs a score on every task of the grid"})
        rows.append(row)
    # claims with no run at all still appear, so a reader sees what was not reproduced
    seen = {(v["method"], v["task"]) for v in verdicts}
    for c in relevant:
        if (c["method"], c["task"]) not in seen and c["task"] in [*grid["tasks"], AVG] \
                and c["method"] in labels | set(agg["method"]):
            why = unavailable.get(c["task"], "not run")
            verdicts.append({"method": c["method"], "model": c["model"], "task": c["task"], "metric": c["metric"],
                             "ours": None, "paper": c["value"], "paper_std": c.get("std"), "delta": None,
                             "seeds": 0, "aggregate": c["aggregate"], "verdict": f"not run: {why}"})
    return pd.DataFrame(rows), pd.DataFrame(verdicts, columns=VERDICT_COLUMNS), scores, task_order


def column_legend(table: pd.DataFrame, task_order, report_cfg: dict) -> str:
    """What each column of the table holds: the metric of every task column, and the other columns."""
    metrics = ", ".join(f"{t}: {table_metric(t, report_cfg)}" for t in task_order if t in table.columns)
    parts = [f"Columns: each task shows its table metric ({metrics})",
             "Avg: their mean, n/a unless every task has a score"
             + ("; it averages different metrics (" + ", ".join(sorted(kinds)) + "), so read it as a summary, not a metric"
                if len(kinds := {table_metric(t, report_cfg) for t in task_order if t in table.columns}) > 1 else "")]
    if "opt. state" in table.columns:
        parts.append("opt. state: the optimizer's state in bytes after training (moments, projections), "
                     "as counted by adaptbench.protocol.optimizer_state_bytes")
    parts.append("[paper x]: the paper's number for that cell; n/a: task not run here (reason below); "
                 "missing: no finished cell yet")
    return ". ".join(parts) + "."


# claims.csv's columns, written even when the grid has no claim (a header, never an empty file)
VERDICT_COLUMNS = ["method", "model", "task", "metric", "ours", "paper", "paper_std", "delta", "seeds", "aggregate",
                   "verdict"]
PEFT_PREFIX = "peft_"  # a grid's PEFT row for our row X is labelled peft_X unless report.peft_pairs says otherwise


def ours_minus_peft(scores: pd.DataFrame, report_cfg: dict, task_order) -> pd.DataFrame:
    """Per pair (our row, PEFT's row) and task: ours − PEFT of the table metric, paired by seed (only the seeds both
    rows ran), as mean ± std over the paired differences. Pairs: ``report.peft_pairs`` ({ours label: PEFT label}),
    else every label X with a row peft_X. Empty when the grid has no pair."""
    labels = set(scores["label"])
    pairs = report_cfg.get("peft_pairs") or {
        label.removeprefix(PEFT_PREFIX): label for label in sorted(labels)
        if label.startswith(PEFT_PREFIX) and label.removeprefix(PEFT_PREFIX) in labels}
    rows = []
    for ours, theirs in pairs.items():
        a, b = scores[scores["label"] == ours], scores[scores["label"] == theirs]
        for model in sorted(set(a["model"]) | set(b["model"])):
            a_m, b_m = a[a["model"] == model], b[b["model"] == model]
            count = lambda s: human_params(s["trainable_params"].iloc[0]) if not s.empty else "–"  # noqa: E731
            row = {"ours": ours, "PEFT": theirs, "model": model, "#params ours / PEFT": f"{count(a_m)} / {count(b_m)}"}
            means = []
            for task in task_order:
                paired = (a_m[a_m["task"] == task][["seed", "score"]]
                          .merge(b_m[b_m["task"] == task][["seed", "score"]], on="seed", suffixes=("_ours", "_peft")))
                if paired.empty:
                    row[task] = "n/a"
                    continue
                diff = paired["score_ours"] - paired["score_peft"]
                means.append(diff.mean())
                spread = f" ± {diff.std():.1f}" if len(diff) > 1 else ""
                row[task] = f"{diff.mean():+.1f}{spread} (n={len(diff)})"
            row["Avg"] = f"{sum(means) / len(means):+.1f}" if means and len(means) == len(task_order) else "n/a"
            rows.append(row)
    return pd.DataFrame(rows)


def peft_section(scores: pd.DataFrame, report_cfg: dict, task_order, out_dir: Path) -> list[str]:
    """The report's "ours − PEFT" section (and ours_vs_peft.csv), or nothing when the grid pairs no rows."""
    diff = ours_minus_peft(scores, report_cfg, task_order)
    if diff.empty:
        return []
    atomic_write_text(out_dir / "ours_vs_peft.csv", diff.to_csv(index=False))
    return ["## Ours − PEFT (paired by seed)", "",
            "Per task: mean ± std over the seeds both rows ran of our score minus PEFT's (× 100, the table's metric "
            "and epoch); n = seeds paired. A difference within the seed spread means the reimplementation matches "
            "the library.", "", diff.to_markdown(index=False, disable_numparse=True), ""]


def to_latex(frame: pd.DataFrame, caption: str) -> str:
    cols = list(frame.columns)
    esc = lambda s: str(s).replace("±", r"$\pm$").replace("_", r"\_").replace("#", r"\#").replace("%", r"\%")  # noqa: E731
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{esc(caption)}}}",
             r"\begin{tabular}{" + "l" * 2 + "r" * (len(cols) - 2) + "}", r"\toprule",
             " & ".join(esc(c) for c in cols) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def plot_score_vs_params(scores: pd.DataFrame, task_order, out: Path, title: str) -> None:
    """Average score over tasks (per seed, then mean ± std) against trainable parameters."""
    per_seed = (scores[scores["task"].isin(task_order)]
                .groupby(["label", "model", "seed"]).agg(score=("score", "mean"), params=("trainable_params", "first"),
                                                         n=("task", "nunique")).reset_index())
    per_seed = per_seed[per_seed["n"] == per_seed["n"].max()]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for (label, model), g in per_seed.groupby(["label", "model"]):
        ax.errorbar(g["params"].iloc[0], g["score"].mean(), yerr=g["score"].std() if len(g) > 1 else 0,
                    marker="o", capsize=3, label=f"{label} ({model})")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (excluding task head)")
    ax.set_ylabel("average score × 100")
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out.with_suffix("." + ext), dpi=150)
    plt.close(fig)


def plot_per_task(scores: pd.DataFrame, task_order, out: Path, title: str) -> None:
    agg = scores.groupby(["label", "model", "task"])["score"].agg(["mean", "std"]).reset_index()
    agg["row"] = agg["label"] + " (" + agg["model"] + ")"
    pivot = agg.pivot(index="task", columns="row", values="mean").reindex([t for t in task_order if t in set(agg["task"])])
    err = agg.pivot(index="task", columns="row", values="std").reindex(pivot.index).fillna(0)
    ax = pivot.plot.bar(yerr=err, figsize=(6.5, 4), capsize=2, rot=0)
    ax.set_ylabel("score × 100")
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=9)
    ax.legend(fontsize=7)
    ax.figure.tight_layout()
    for ext in ("png", "svg"):
        ax.figure.savefig(out.with_suffix("." + ext), dpi=150)
    plt.close(ax.figure)


def write_report(cells_csv, grid_path, out_dir, claims_dir=None, unavailable=None) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = grid_path if isinstance(grid_path, dict) else yaml.safe_load(Path(grid_path).read_text())
    tidy = pd.read_csv(cells_csv) if not isinstance(cells_csv, pd.DataFrame) else cells_csv
    cells = completed(tidy)
    if cells.empty:
        raise ValueError(f"{cells_csv}: no results to report")
    not_done = tidy[tidy["status"] != "ok"].drop_duplicates(["label", "model", "task", "seed"])
    unavailable = unavailable or {}
    table, verdicts, scores, task_order = build_tables(cells, grid, load_claims(claims_dir), unavailable)
    report_cfg = grid.get("report", {}) or {}
    title = report_cfg.get("title", f"adaptbench grid '{grid['grid']}'")
    synthetic = bool(cells["synthetic"].any())
    selection = (grid.get("train") or {}).get("selection", "best")

    written = []
    for name, text in (("table.csv", table.to_csv(index=False)),
                       ("table.md", table.to_markdown(index=False, disable_numparse=True) + "\n"),
                       ("table.tex", to_latex(table, title)),
                       ("claims.csv", verdicts.to_csv(index=False)),
                       ("cells.csv", tidy.to_csv(index=False))):
        atomic_write_text(out_dir / name, text)
        written.append(out_dir / name)
    plot_score_vs_params(scores, task_order, out_dir / "score_vs_params", title)
    plot_per_task(scores, task_order, out_dir / "per_task", title)
    written += [out_dir / "score_vs_params.png", out_dir / "per_task.png"]

    seeds = sorted(cells["seed"].unique())
    lines = [f"# {title}", ""]
    if synthetic:
        lines += ["> **SYNTHETIC DATA.** These tasks are generated by adaptbench (adaptbench/tasks/synthetic_text.py) "
                  "to exercise the pipeline offline. They are not GLUE and are never compared with paper numbers.", ""]
    lines += [f"Seeds: {', '.join(map(str, seeds))}. Cells: mean ± std over seeds of the {selection} epoch, × 100. "
              "#params: trainable parameters excluding the task head (as the papers count them).", "",
              table.to_markdown(index=False, disable_numparse=True), "", column_legend(table, task_order, report_cfg), ""]
    if report_cfg.get("notes"):
        lines += [f"- {note}" for note in report_cfg["notes"]] + [""]
    if unavailable:
        lines += ["Tasks not run:", ""] + [f"- **{t}**: {why}" for t, why in unavailable.items()] + [""]
    if not not_done.empty:  # a failed cell is a row with its reason (failure.json), never a silent gap
        counts = not_done["status"].value_counts()
        summary = ", ".join(f"{n} {status}" for status, n in counts.items())
        lines += [f"Cells without a score (left out of the table; {summary} of "
                  f"{len(tidy.drop_duplicates(['label', 'model', 'task', 'seed']))}; a rerun retries them):", ""]
        lines += [f"- {r.label} / {r.model} / {r.task} / seed {r.seed}: **{r.status}** — {r.reason}"
                  for r in not_done.itertuples()] + [""]
    if not verdicts.empty:
        lines += [f"## Against the papers ({', '.join(report_cfg['claims']) if isinstance(report_cfg.get('claims'), list) else report_cfg.get('claims')}: aggregate as each paper does)", "",
                  verdicts.to_markdown(index=False), ""]
    lines += peft_section(scores, report_cfg, task_order, out_dir)
    lines += ["![score vs trainable parameters](score_vs_params.png)", "", "![per task](per_task.png)", ""]
    atomic_write_text(out_dir / "README.md", "\n".join(lines))
    written.insert(0, out_dir / "README.md")
    return written
