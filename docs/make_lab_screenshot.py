"""docs/figures/lab.png: the lab's page on the tour's chapter 4 (LSTM, forget bias 1 vs 0), after a short run.

    python docs/make_lab_screenshot.py          # needs rnnlab[lab], playwright and Chromium; about a minute
"""
import os
import shutil
import sys
import tempfile
from pathlib import Path


def main():
    from playwright.sync_api import sync_playwright
    from rnnlab.lab.app import LabServer
    chromium = os.environ.get("RNNLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("make_lab_screenshot: needs Chromium (apt-get install chromium, or RNNLAB_CHROMIUM=path)")
    out = Path(__file__).parent / "figures" / "lab.png"
    with tempfile.TemporaryDirectory() as runs, LabServer(runs) as srv, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(srv.url)
        page.wait_for_selector("body[data-ready='1']")
        page.select_option("#preset", "lstm")
        page.fill("[name=seq_len]", "50")
        page.fill("[name=steps]", "600")
        page.click("#start")
        page.wait_for_function("document.querySelectorAll('.run .status').length === 2 && "
                               "[...document.querySelectorAll('.run .status')].every(s => s.dataset.state === 'done')",
                               timeout=600_000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
