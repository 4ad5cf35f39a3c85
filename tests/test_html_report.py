"""The static leaderboard page: self-contained, traceable, and checked in a real headless browser (Debian's
``chromium``; skipped where it is not installed): it loads without script errors, shows the stored rows, and
sorting by a column reorders them."""

import re
import shutil
import subprocess

import pytest

from adaptbench.html_report import leaderboard_html
from tests.test_leaderboard import cell

# Three rows whose best-Avg order (full, lora, bitfit) differs from their parameter order (bitfit, lora, full).
ROWS = {"full": (10**6, [0.90, 0.88]), "lora": (10**4, [0.85, 0.84]), "bitfit": (10**2, [0.70, 0.74])}


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    for label, (params, accs) in ROWS.items():
        for task in ("sst2", "mrpc"):
            for seed, acc in enumerate(accs):
                cell(root, label=label, task=task, seed=seed, acc=acc - (0.05 if task == "mrpc" else 0), params=params)
    text, _, _ = leaderboard_html(root)
    path = root / "leaderboard.html"
    path.write_text(text)
    return path


def rows(dom: str) -> list[str]:
    """Visible rows of the leaderboard table, in order."""
    return re.findall(r'<tr data-row="([^"]+)"(?![^>]*\bhidden\b)[^>]*>', dom)


def test_the_page_is_self_contained_and_traceable(page):
    text = page.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing fetched: no server, no CDN
    assert rows(text) == ["full", "lora", "bitfit"]
    assert text.count("data:image/png;base64,") == 2  # Pareto front and per-task bars
    assert re.search(r'title="full / sst2\nseed 0: 90.00 · config [0-9a-f]{16} · commit', text)
    assert "budget: epochs=3" in text and "seeds: 0, 1 (2)" in text


CHROMIUM = shutil.which("chromium")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


def browse(url: str, tmp_path, *extra) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    proc = subprocess.run([CHROMIUM, *flags, *extra, url], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@needs_browser
def test_a_real_browser_loads_sorts_and_filters_it(page, tmp_path):
    dom = browse(page.as_uri(), tmp_path, "--dump-dom")
    assert 'data-ready="1"' in dom and 'data-errors=""' in dom
    assert rows(dom) == ["full", "lora", "bitfit"]  # the stored rows, best Avg first
    dom = browse(page.as_uri() + "#sort=params", tmp_path, "--dump-dom")
    assert 'data-sorted="params"' in dom and 'data-errors=""' in dom
    assert rows(dom) == ["bitfit", "lora", "full"]  # sorted by trainable parameters, ascending
    dom = browse(page.as_uri() + "#sort=Avg&desc&filter=l", tmp_path, "--dump-dom")
    assert rows(dom) == ["full", "lora"]  # bitfit has no "l"; Avg descending
    browse(page.as_uri(), tmp_path, f"--screenshot={tmp_path / 'page.png'}", "--window-size=1280,1400")
    assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_browser
def test_the_browser_check_sees_script_errors(page, tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text(page.read_text().replace("function filterRows(text){", "function filterRows(text){ nosuch();"))
    dom = browse(broken.as_uri() + "#filter=x", tmp_path, "--dump-dom")
    assert re.search(r'data-errors="[^"]*nosuch[^"]*"', dom)


def test_a_grid_page_has_its_rows_and_the_track_report_figures(tmp_path):
    """reports/<grid>/index.html: the grid's own rows (not another grid's) and the figures its track's report
    drew (a per-task plot and a TTA severity plot here), each inlined once; the boards' own plots are the
    leaderboard page's."""
    import base64

    from adaptbench.html_report import grid_page
    from tests.test_leaderboard import index

    ours = [cell(tmp_path, label=label, task="sst2", seed=0, acc=acc) for label, acc in (("lora", 0.8), ("full", 0.9))]
    other = [cell(tmp_path, label="bitfit", task="sst2", seed=0, acc=0.7, lr=1e-3)]
    index(tmp_path, "mine", ours)
    index(tmp_path, "theirs", other)
    out = tmp_path / "reports" / "mine"
    out.mkdir(parents=True)
    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
    (out / "per_task.png").write_bytes(png)
    (out / "digits_c_noise_severity.png").write_bytes(png + b"severity")
    text = grid_page(tmp_path, "mine", out).read_text()
    assert rows(text) == ["full", "lora"]  # bitfit is another grid's row
    assert "adaptbench · mine" in text and "Figures of the grid's report" in text
    assert text.count("data:image/png;base64,") == 2  # the report's two figures, no board plots
    assert base64.b64encode(png + b"severity").decode() in text and 'alt="digits c noise severity"' in text


def test_the_report_command_writes_the_grid_page(tmp_path):
    import json
    import sys

    from tests.test_leaderboard import index

    records = [cell(tmp_path, label="lora", task="sst2", seed=s, acc=0.8 + s / 100) for s in (0, 1)]
    index(tmp_path, "mine", records)
    tidy = tmp_path / "grids" / "mine" / "tidy.csv"
    subprocess.run([sys.executable, "-m", "adaptbench", "collate", "--index", str(tidy.parent / "index.json"),
                    "--out", str(tidy)], check=True, capture_output=True)
    grid = {"grid": "mine", "tasks": ["sst2"], "methods": ["lora"]}
    proc = subprocess.run([sys.executable, "-m", "adaptbench", "report", "--cells", str(tidy), "--grid-json",
                           json.dumps(grid), "--out-dir", str(tmp_path / "reports" / "mine"), "--results",
                           str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = tmp_path / "reports" / "mine" / "index.html"
    assert str(page) in proc.stdout.splitlines() and rows(page.read_text()) == ["lora"]
