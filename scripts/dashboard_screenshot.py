"""Screenshot of the dashboard on a ledger, for the README: `kdroute dashboard` on a free loopback
port, driven by Playwright with Debian's Chromium (apt-get install chromium).

    python scripts/dashboard_screenshot.py LEDGER [-o docs/dashboard.png] [--tab "Quality & drift"]
    python scripts/dashboard_screenshot.py --synthetic runs/synthetic.db   # write one first

The picture is the overview and one tab, cut at the end of the page's content.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Chromium's background services try the network, which this machine refuses: switch them off.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(ledger: Path) -> tuple[subprocess.Popen, str]:
    port = _port()
    proc = subprocess.Popen([sys.executable, "-m", "kdroute", "dashboard", "--db", str(ledger),
                             "--port", str(port)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"kdroute dashboard exited {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.read() == b"ok":
                    return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    sys.exit("kdroute dashboard did not answer within 120 s")


def shoot(url: str, output: Path, tab: str, width: int, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": width, "height": 3000}, device_scale_factor=1)
        page.goto(url)
        page.locator('[data-testid="stMetric"]').first.wait_for(timeout=120_000)
        if tab:
            page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(1000)
        page.wait_for_function("() => !document.querySelector("
                               "'[data-testid=\"stStatusWidgetRunningIcon\"]')", timeout=120_000)
        page.wait_for_timeout(2500)  # charts draw after the script run
        bottom = page.evaluate("() => Math.max(...[...document.querySelectorAll("
                               "'[data-testid=stTabPanel]:not([hidden]) [data-testid]')]"
                               ".map(e => e.getBoundingClientRect().bottom), 600)")
        output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(output), clip={"x": 0, "y": 0, "width": width,
                                                "height": min(int(bottom) + 40, 3000)})
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ledger", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--tab", default="Quality & drift", help="tab to open ('' = the first)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--synthetic", action="store_true",
                        help="first write a synthetic week of traffic (20,000 requests) to LEDGER")
    parser.add_argument("--chromium", default=os.environ.get("KDROUTE_CHROMIUM")
                        or shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    if args.synthetic:
        from kdroute.store.synthetic import Synthetic, write_synthetic

        args.ledger.unlink(missing_ok=True)
        write_synthetic(args.ledger, Synthetic(requests=20_000, days=7, seed=0))
    if not Path(args.chromium).is_file():
        sys.exit(f"{args.chromium}: no Chromium there (apt-get install chromium)")
    proc, url = _serve(args.ledger)
    try:
        shoot(url, args.output, args.tab, args.width, args.chromium)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
