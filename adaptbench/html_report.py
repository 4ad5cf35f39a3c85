"""The leaderboard as one static HTML page (no server, nothing fetched: CSS, script and plots inline), and
``report_all``: every grid's report and the leaderboard pages regenerated from the stored records.

Per table (one protocol, as ``adaptbench.leaderboard`` builds them): the protocol it shows, the table
(click a header to sort, type in the filter box to keep matching rows), the papers' claims beside ours
with verdicts, and two plots as inline PNGs: score against trainable parameters with the Pareto front
drawn, and per-task bars with 95 % interval error bars. Every number is traceable: a cell's ``title``
(hover) lists per seed its score, config hash, commit and data hashes; a row's lists its grids and commits.

The page reports on itself, for a headless browser to check: script errors land in
``<body data-errors>`` (empty when none), ``data-ready="1"`` is set once the script has run, and a URL hash
``#sort=<column>[&desc]`` and ``#filter=<text>`` sort and filter on load (``data-sorted`` names the column).
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import time
from pathlib import Path

from adaptbench import leaderboard as lb
from adaptbench.leaderboard import Board, human_bytes, human_count, pareto_front

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
.summary{color:#555}.protocol{font-size:12px;color:#444;margin:.3em 0 .8em 1.2em;padding:0}
.synthetic{background:#fff4d6;border-left:4px solid #e0a800;padding:.3em .6em}
table{border-collapse:collapse;margin:.5em 0}th,td{border-bottom:1px solid #e4e4e4;padding:.3em .6em;text-align:right}
th{background:#f4f6f8;cursor:pointer;user-select:none;white-space:nowrap}th:first-child,td:first-child{text-align:left}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}tr.front td:first-child{font-weight:600}
.ci{display:block;font-size:11px;color:#777}.claim{display:block;font-size:11px;color:#7a4d00}
.plots img{max-width:48%;margin-right:1%;border:1px solid #eee}#filter{padding:.3em;width:18em}
"""

# Error capture is the first script of <head>, so it sees errors of everything after it.
ERRORS_JS = """window.__errors=[];window.onerror=function(m,s,l){window.__errors.push(m+' (line '+l+')');
if(document.body)document.body.setAttribute('data-errors',window.__errors.join(' | '));};"""

TABLE_JS = """
function cellValue(tr,i){var td=tr.children[i];if(!td)return '';var v=td.getAttribute('data-v');
  return (v!==null&&v!=='')?parseFloat(v):td.textContent.trim().toLowerCase();}
function sortTable(table,col,desc){
  var ths=table.tHead.rows[0].cells,i=-1;
  for(var k=0;k<ths.length;k++){ths[k].classList.remove('asc','desc');if(ths[k].getAttribute('data-col')===col)i=k;}
  if(i<0)return false;
  var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){var x=cellValue(a,i),y=cellValue(b,i);
    var xm=(x===''||(typeof x==='number'&&isNaN(x))),ym=(y===''||(typeof y==='number'&&isNaN(y)));
    if(xm||ym)return xm-ym;var c=(x<y)?-1:(x>y)?1:0;return desc?-c:c;});
  rows.forEach(function(r){body.appendChild(r);});ths[i].classList.add(desc?'desc':'asc');return true;}
function filterRows(text){text=(text||'').toLowerCase();
  document.querySelectorAll('table.lb tbody tr').forEach(function(tr){
    tr.hidden=text!==''&&tr.textContent.toLowerCase().indexOf(text)<0;});}
document.addEventListener('DOMContentLoaded',function(){
  document.querySelectorAll('table.lb').forEach(function(table){
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th){th.addEventListener('click',function(){
      sortTable(table,th.getAttribute('data-col'),th.classList.contains('asc'));});});});
  var box=document.getElementById('filter');box.addEventListener('input',function(){filterRows(box.value);});
  var hash={};location.hash.replace(/^#/,'').split('&').forEach(function(p){var kv=p.split('=');
    if(kv[0])hash[decodeURIComponent(kv[0])]=kv.length>1?decodeURIComponent(kv[1]):'';});
  if(hash.sort){var n=0;document.querySelectorAll('table.lb').forEach(function(t){
      if(sortTable(t,hash.sort,'desc' in hash))n++;});
    document.body.setAttribute('data-sorted',n?hash.sort:'');}
  if(hash.filter){box.value=hash.filter;filterRows(hash.filter);}
  document.body.setAttribute('data-errors',window.__errors.join(' | '));
  document.body.setAttribute('data-ready','1');});
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def _num(value) -> str:
    """A sort value for ``data-v``: the number, or empty (sorted last)."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _main_key(board: Board) -> str:
    return "Avg" if len(board.columns) > 1 else board.columns[0].key


_PLOTS: dict = {}  # (plot, what it draws) → PNG: a board on a grid's page and on the leaderboard is drawn once


def _drawn_once(plot):
    """Memoise a board plot on the data it draws (rows, columns, their statistics), not on the board object."""
    import functools

    @functools.wraps(plot)
    def wrapper(board: Board) -> str | None:
        key = (plot.__name__, repr([(c.key, c.title, c.higher_is_better) for c in board.columns]),
               repr([(r["row"], r["trainable_params"], sorted(r["stats"].items())) for r in board.rows]))
        if key not in _PLOTS:
            _PLOTS[key] = plot(board)
        return _PLOTS[key]

    return wrapper


@_drawn_once
def pareto_plot(board: Board) -> str | None:
    """Score (Avg, or the one task) against trainable parameters, log x, the Pareto front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = _main_key(board)
    points = [(r["row"], r["trainable_params"], r["stats"][key]) for r in board.rows
              if key in r["stats"] and r["trainable_params"]]
    if not points:
        return None
    higher = board.columns[0].higher_is_better
    front = pareto_front([(n, c, s["mean"]) for n, c, s in points], higher)
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for name, cost, s in points:
        err = 0 if math.isnan(s["lo"]) else s["mean"] - s["lo"]
        ax.errorbar(cost, s["mean"], yerr=err, marker="o", capsize=3, color="C0" if name in front else "0.6")
        if len(points) <= 20 or name in front:  # a crowded plot names only the front
            ax.annotate(name, (cost, s["mean"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    line = sorted((c, s["mean"]) for n, c, s in points if n in front)
    ax.step([c for c, _ in line], [m for _, m in line], where="post", color="C0", alpha=0.5, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (without the task head)")
    ax.set_ylabel(("Avg " if key == "Avg" else f"{board.columns[0].title} ") + ("↑" if higher else "↓"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


@_drawn_once
def bars_plot(board: Board) -> str | None:
    """Per-task bars for the table's first 12 rows (best first), with 95 % t-interval error bars (none
    where n = 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows, cols = board.rows[:12], board.columns
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(5.6, 1.2 * len(cols) + 3), 3.8))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        stats = [r["stats"].get(c.key) for c in cols]
        means = [s["mean"] if s else np.nan for s in stats]
        errs = [0 if not s or math.isnan(s["lo"]) else s["mean"] - s["lo"] for s in stats]
        ax.bar(np.arange(len(cols)) + i * width, means, width, yerr=errs, capsize=2, label=r["row"])
    ax.set_xticks(np.arange(len(cols)) + 0.4 - width / 2, [c.title for c in cols])
    ax.set_ylabel("score (95 % interval)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _png(fig)


def _cell_title(board: Board, r: dict, key: str) -> str:
    lines = [f"{r['row']} / {next((c.title for c in board.columns if c.key == key), key)}"]
    for p in r["provenance"].get(key, []):
        lines.append(f"seed {p['seed']}: {p['score']:.2f} · config {p['config']} · commit {p['commit'] or '?'}"
                     f"{' (dirty)' if p['dirty'] else ''} · data {p['data'] or '?'}")
    return "\n".join(lines)


def board_html(board: Board, plots: bool = True) -> str:
    key = _main_key(board)
    front = pareto_front([(r["row"], r["trainable_params"], r["stats"][key]["mean"]) for r in board.rows
                          if key in r["stats"] and r["trainable_params"]], board.columns[0].higher_is_better)
    multi = len(board.columns) > 1
    heads = [("method", "method")] + [(c.title, c.title) for c in board.columns] + ([("Avg", "Avg")] if multi else []) \
        + [("seeds", "seeds"), ("params", "#params"), ("opt_state", "opt. state"), ("s_step", "s/step")]
    out = [f'<section data-board="{esc(board.key[:16])}">', f"<h2>{esc(board.heading)}</h2>"]
    if board.synthetic:
        out.append('<p class="synthetic">SYNTHETIC data, generated by adaptbench: never compared with paper numbers.</p>')
    out.append('<ul class="protocol">' + "".join(f"<li>{esc(line)}</li>" for line in board.protocol) + "</ul>")
    out.append('<table class="lb"><thead><tr>' + "".join(f'<th data-col="{esc(c)}">{esc(t)}</th>' for c, t in heads)
               + "</tr></thead><tbody>")
    for r in board.rows:
        title = (f"{r['row']} (method {r['method']}, {r['family']}) · grids: {', '.join(r['grids']) or '—'} · "
                 f"commits: {', '.join(r['commits']) or '?'} · seeds {', '.join(map(str, r['seeds']))}")
        cells = [f'<td data-v="">{esc(r["row"])}</td>']
        for c in board.columns:
            s = r["stats"].get(c.key)
            claim = next((x for x in board.claims if x["row"] == r["row"] and x["column"] == c.key), None)
            text = _stat_html(s, board.digits(c.metric))
            if claim:
                short = claim["verdict"].split(":")[0]  # the full reason on hover
                text += (f'<span class="claim" title="{esc(claim["paper"])}: {esc(claim["verdict"])}">'
                         f'paper {claim["paper_value"]} · {esc(short)}</span>')
            cells.append(f'<td data-v="{_num(s["mean"] if s else None)}" title="{esc(_cell_title(board, r, c.key))}">'
                         f"{text}</td>")
        if multi:
            s = r["stats"].get("Avg")
            cells.append(f'<td data-v="{_num(s["mean"] if s else None)}">{_stat_html(s, 1)}</td>')
        cells += [f'<td data-v="{r["n_seeds"]}">{r["n_seeds"]}</td>',
                  f'<td data-v="{_num(r["trainable_params"])}">{human_count(r["trainable_params"])}</td>',
                  f'<td data-v="{_num(r["optimizer_state_bytes"])}">{human_bytes(r["optimizer_state_bytes"])}</td>',
                  f'<td data-v="{_num(r["seconds_per_step"])}">'
                  f'{"—" if r["seconds_per_step"] is None else format(r["seconds_per_step"], ".3f")}</td>']
        css = ' class="front"' if r["row"] in front else ""
        out.append(f'<tr data-row="{esc(r["row"])}"{css} title="{esc(title)}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    if board.claims:
        out.append("<h3>Against the papers</h3><table><thead><tr><th>method</th><th>task</th><th>ours</th>"
                   "<th>paper</th><th>aggregate</th><th>verdict</th></tr></thead><tbody>")
        out += [f"<tr><td>{esc(c['row'])}</td><td>{esc(c['task'])}</td><td>{c['ours']:.2f}</td>"
                f"<td>{esc(c['paper'])}: {c['paper_value']}</td><td>{esc(c['aggregate'])}</td><td>{esc(c['verdict'])}</td></tr>"
                for c in board.claims]
        out.append("</tbody></table>")
    if plots:
        drawn = [(pareto_plot(board), "score against trainable parameters, Pareto front"),
                 (bars_plot(board), "per task, 95 % interval error bars")]
        out.append('<div class="plots">' + "".join(f'<img alt="{esc(alt)}" src="data:image/png;base64,{png}">'
                                                   for png, alt in drawn if png) + "</div>")
    out.append("</section>")
    return "\n".join(out)


def _stat_html(s: dict | None, digits: int) -> str:
    if not s or not s["n"]:
        return "—"
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f}<span class=\"ci\">n=1</span>"
    return (f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"
            f"<span class=\"ci\">[{s['lo']:.{digits}f}, {s['hi']:.{digits}f}] n={s['n']}</span>")


def leaderboard_page(boards: list[Board], summary: str, title: str = "adaptbench leaderboard",
                     figures: list[tuple[str, str]] = (), board_plots: bool = True) -> str:
    """The page: one sortable, filterable table per (track, model, protocol), each with its Pareto and per-task
    plots (``board_plots``), then ``figures`` (base64 PNG, alt)."""
    body = "\n".join(board_html(b, board_plots) for b in boards) or "<p>No stored results to show.</p>"
    if figures:
        body += ("\n<h2>Figures of the grid's report</h2>\n<div class=\"plots\">"
                 + "".join(f'<img alt="{esc(alt)}" title="{esc(alt)}" src="data:image/png;base64,{png}">'
                           for png, alt in figures) + "</div>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<script>{ERRORS_JS}</script>
<style>{CSS}</style></head>
<body data-errors="" data-ready="0">
<h1>{esc(title)}</h1>
<p class="summary">{esc(summary)}; protocols are never mixed. Cells: mean ± std over seeds, the 95 % t-interval
below; hover a cell for its records (seed, config hash, commit, data). Click a header to sort.</p>
<p><label>Filter rows: <input id="filter" type="search" placeholder="method name, number…"></label></p>
{body}
<script>{TABLE_JS}</script>
</body></html>
"""


def leaderboard_html(results="results", grid=None, track=None, model=None, task=None, claims_dir=None):
    """``leaderboard.leaderboard`` as the HTML page: (text, store, tables)."""
    store, boards = lb.load_boards(results, grid, track, model, task, claims_dir)
    return leaderboard_page(boards, lb.summary_line(store, boards)), store, boards


def grid_page(results, grid: str, out_dir, claims_dir=None) -> Path:
    """``<out_dir>/index.html``, a grid's own page: its stored rows as the leaderboard shows them (sortable,
    filterable, claims with verdicts, every cell traced to its records) and the figures its track's report drew
    in ``out_dir`` (score against parameters, per task, TTA error against severity ...), inlined."""
    from adaptbench.results import atomic_write_text

    out_dir = Path(out_dir)
    store, boards = lb.load_boards(results, grid=grid, claims_dir=claims_dir)
    figures = [(base64.b64encode(png.read_bytes()).decode("ascii"), png.stem.replace("_", " "))
               for png in sorted(out_dir.glob("*.png"))]
    path = out_dir / "index.html"
    atomic_write_text(path, leaderboard_page(boards, lb.summary_line(store, boards), f"adaptbench · {grid}", figures,
                                             board_plots=False))
    return path


def _report_grid(results: Path, reports: Path, claims_dir, name: str, index: dict) -> dict:
    """One grid's report and page from the store: {grid, status, seconds, paths | reason}."""
    from adaptbench.collate import collate
    from adaptbench.tracks import get_track

    t0 = time.perf_counter()
    try:
        config = lb.grid_config(name, str(results)) or {}
        config = {**config, "grid": name, "kind": index.get("kind", config.get("kind", "finetune"))}
        config.setdefault("tasks", list(dict.fromkeys(e.get("task") for e in index["cells"])))
        tidy = results / "grids" / name / "tidy.csv"
        collate([], tidy, index=results / "grids" / name / "index.json")
        paths = list(get_track(config["kind"]).report(str(tidy), config, reports / name, claims_dir,
                                                     index.get("unavailable") or {}))
        paths.append(grid_page(results, name, reports / name, claims_dir))
        return {"grid": name, "status": "ok", "seconds": time.perf_counter() - t0, "paths": paths}
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
        reason = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        return {"grid": name, "status": "skipped", "seconds": time.perf_counter() - t0,
                "reason": " ".join(str(reason).split())}


def report_all(results="results", reports="reports", claims_dir=None, workers: int | None = None) -> list[dict]:
    """Every grid's report from ``results/grids/*/index.json`` and the stored records (collate, then the
    track's report, then its page) and the top-level leaderboard (``reports/leaderboard.{md,html}``); trains
    nothing. The grids run in parallel, one process per core (``workers``). The grid's settings come from
    ``leaderboard.grid_config`` (else its kind and the index's tasks). A grid whose report fails is one entry
    with the reason; the others still run. Returns {grid, status, seconds, paths | reason} per grid, the
    leaderboard last."""
    from concurrent.futures import ProcessPoolExecutor

    from adaptbench.results import atomic_write_text

    results, reports = Path(results), Path(reports)
    grids = lb.grid_indexes(results)
    workers = max(1, min(len(grids), workers or os.cpu_count() or 1))
    if workers == 1:
        done = [_report_grid(results, reports, claims_dir, name, index) for name, index in grids.items()]
    else:
        with ProcessPoolExecutor(workers) as pool:
            done = list(pool.map(_report_grid, *zip(*[(results, reports, claims_dir, n, i) for n, i in grids.items()])))
    t0 = time.perf_counter()
    store, boards = lb.load_boards(results, claims_dir=claims_dir)
    summary = lb.summary_line(store, boards)
    atomic_write_text(reports / "leaderboard.md", lb.to_markdown(boards, summary) + "\n")
    atomic_write_text(reports / "leaderboard.html", leaderboard_page(boards, summary))
    done.append({"grid": "(leaderboard)", "status": "ok", "seconds": time.perf_counter() - t0,
                 "paths": [reports / "leaderboard.md", reports / "leaderboard.html"]})
    return done
