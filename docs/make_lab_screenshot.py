"""docs/figures/lab*.png: the lab's page on chapters of the tour, after a short run of each.

    python docs/make_lab_screenshot.py [--zh] [PRESET ...]   # needs rnnlab[lab], playwright and Chromium

lab.png is chapter 4 (LSTM, forget bias 1 vs 0); lab-<preset>.png any other preset (vanishing: chapter 3, the
RNN's gradient at two spectral radii; gru: chapter 5, the update gate without and with its bias). ``--zh``: the
page in Chinese, lab-<preset>.zh.png (needs a CJK font, e.g. Debian's fonts-wqy-microhei). A minute each.
"""
import os
import shutil
import sys
import tempfile
from pathlib import Path


def main(presets=("lstm",), zh=False):
    chromium = os.environ.get("RNNLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("make_lab_screenshot: needs Chromium (apt-get install chromium, or RNNLAB_CHROMIUM=path)")
    for preset in presets:
        shoot(preset, chromium, zh)


def shoot(preset, chromium, zh=False):
    from playwright.sync_api import sync_playwright
    from rnnlab.lab.app import LabServer
    name = "lab" if preset == "lstm" else f"lab-{preset}"
    out = Path(__file__).parent / "figures" / (f"{name}.zh.png" if zh else f"{name}.png")
    with tempfile.TemporaryDirectory() as runs, LabServer(runs) as srv, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(srv.url)
        page.wait_for_selector("body[data-ready='1']")
        if zh:
            page.click("#lang-zh")
        page.select_option("#preset", preset)
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
    args = [a for a in sys.argv[1:] if a != "--zh"]
    main(tuple(args) or ("lstm",), zh="--zh" in sys.argv[1:])
