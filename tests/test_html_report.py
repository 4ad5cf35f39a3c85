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
