"""`kdroute dashboard` in a real browser: the command serves the page on 127.0.0.1, Playwright
drives Debian's Chromium (no browser download is possible here), a filter is changed and the
numbers change, no error element is shown, the disagreements download is a distillation set,
and a screenshot is saved. Skips, saying why, only when no Chromium (or Playwright) is found."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO

from kdroute.store.synthetic import Synthetic, write_synthetic

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium() -> str | None:
    for candidate in (os.environ.get("KDROUTE_CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def dashboard(tmp_path):
    """`kdroute dashboard` on a seeded ledger; yields its URL, stops it with Ctrl-C."""
    ledger = tmp_path / "ledger.db"
    write_synthetic(ledger, Synthetic(requests=3000, days=2, seed=21))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kdroute", "dashboard", "--db", str(ledger),
                             "--port", str(port)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"kdroute dashboard exited {proc.returncode}: {proc.stdout.read()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.read() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("kdroute dashboard did not answer within 120 s")
            time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def settle(page) -> None:
    """Wait until the script run has finished (Streamlit shows a running icon meanwhile)."""
    page.wait_for_timeout(500)
    page.wait_for_function("() => !document.querySelector("
                           "'[data-testid=\"stStatusWidgetRunningIcon\"]')", timeout=90_000)


def undrawn_charts(page) -> tuple[int, int]:
    """(charts shown, of which drew nothing): Vega draws nothing at all when a spec's expression
    does not compile (e.g. a misspelt function in an axis's labelExpr)."""
    page.wait_for_timeout(1500)
    shown, empty = page.evaluate("""() => {
        const charts = [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
            .filter(c => c.checkVisibility());  // the open tab's: the others are not laid out
        return [charts.length, charts.filter(c => !c.querySelector('canvas, svg')).length];
    }""")
    return shown, empty


def test_dashboard_in_chromium(dashboard, tmp_path):
    executable = chromium()
    if executable is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set KDROUTE_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from kdroute.distill.data import read_pairs

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400},
                                    accept_downloads=True)
            page.goto(dashboard)
            page.locator('[data-testid="stMetric"]').filter(has_text="Requests").first \
                .wait_for(timeout=90_000)
            before = metric(page, "Requests")
            assert before == "3,000"
            settle(page)
            shown, empty = undrawn_charts(page)
            assert shown >= 3 and empty == 0, f"{empty} of {shown} charts on the Cost tab drew nothing"
            page.get_by_role("combobox", name="Slice").click()
            page.get_by_role("option", name="family:arith").click()
            page.keyboard.press("Escape")
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-testid=\"stMetric\"]')].some(m => "
                "m.innerText.includes('Requests') && !m.innerText.includes('3,000'))",
                timeout=60_000)
            settle(page)
            after = metric(page, "Requests")
            assert after != before and int(after.replace(",", "")) < 3000
            page.get_by_role("tab", name="Disagreements").click()
            button = page.get_by_role("button", name="Download all disagreements")
            button.wait_for(timeout=30_000)
            with page.expect_download(timeout=60_000) as download:
                button.click()
            saved = tmp_path / "disagreements.jsonl"
            download.value.save_as(saved)
            rows = read_pairs(saved)
            assert rows and all(r["family"] == "arith" for r in rows)
            settle(page)
            page.get_by_role("tab", name="Quality & drift").click()
            shown, empty = undrawn_charts(page)
            assert shown >= 1 and empty == 0, f"{empty} of {shown} quality charts drew nothing"
            errors = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
            assert errors.count() == 0
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 20_000
        finally:
            browser.close()
