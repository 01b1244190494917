"""report.html and the progressive viewer, on a real run of Kodak crops.

The run measures a progressive wavelet codec, a rate-ladder anchor and JPEG 2000 on three crops,
saving the reconstructions of the first and last image. The first tests check the files (each
saved reconstruction is the decode that was scored; the page needs nothing outside the run
folder); the browser test opens the page in headless Chromium from ``file://`` and drives it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, write_dataset
from PIL import Image

from bench.images import load_rgb
from bench.metrics import psnr_rgb
from bench.report import render
from bench.report_html import PLOTLY_FILE
from bench.runner import RunConfig, RunError, parse_codec_requests, run
from bench.viewer import pixels_sha256, select_viewer_images

#: The rate-ladder anchor at x265's fastest preset: the page shows whatever the ladder picked,
#: and veryslow (the default) only costs the run's CPU (its label also puts brackets in paths).
LADDER = "hevc444[preset=ultrafast]"
#: The viewer's folder of each codec: its label with the characters a file name avoids replaced.
FOLDERS = {"spiht": "spiht", LADDER: "hevc444_preset=ultrafast", "jpeg2000": "jpeg2000"}
CODECS = ("spiht", LADDER, "jpeg2000")
BPP = (0.25, 0.5, 1.0, 2.0, 4.0)
CROPS = {
    "a.png": ("kodim01.png", 100, 200, 96, 128),
    "b.png": ("kodim05.png", 50, 300, 48, 40),
    "c.png": ("kodim23.png", 150, 300, 64, 80),
}
VIEWER_IMAGES = ("a.png", "c.png")  # "auto": the first and the last image


@pytest.fixture(scope="module")
def html_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("html")
    manifest = write_dataset(folder / "data", crops=CROPS)
    config = RunConfig(
        codecs=tuple(parse_codec_requests(",".join(CODECS))),
        dataset=str(manifest),
        bpp=BPP,
        repeats=1,
        entry_points=False,
        viewer_images=("auto",),
    )
    out = folder / "run"
    run(config, out)
    render(out)
    return out


def _rows(run_dir: Path) -> pd.DataFrame:
    return pd.read_json(run_dir / "rows.jsonl", lines=True)


def test_select_viewer_images():
    images = ["kodim01.png", "kodim02.png", "kodim23.png"]
    assert select_viewer_images(["auto"], images) == ["kodim01.png", "kodim23.png"]
    assert select_viewer_images(["auto"], images[:1]) == ["kodim01.png"]
    assert select_viewer_images(["all"], images) == images
    assert select_viewer_images([], images) == select_viewer_images(["none"], images) == []
    assert select_viewer_images(["kodim23", "kodim01.png"], images) == [
        "kodim01.png",
        "kodim23.png",
    ]
    with pytest.raises(ValueError, match="kodim99"):
        select_viewer_images(["kodim99"], images)


def test_unknown_viewer_image_stops_the_run_before_it_starts(tmp_path):
    manifest = write_dataset(tmp_path / "data", crops={"a.png": CROPS["a.png"]})
    config = RunConfig(
        codecs=tuple(parse_codec_requests("spiht")),
        dataset=str(manifest),
        bpp=BPP,
        viewer_images=("b",),
    )
    with pytest.raises(RunError, match="not in this run: b"):
        run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_saved_reconstructions_are_the_scored_decodes(html_run):
    rows = _rows(html_run)
    dataset = {name: load_rgb(html_run.parent / "data" / "crops" / name) for name in CROPS}
    shown = rows[rows["image"].isin(VIEWER_IMAGES)]
    assert set(shown["codec"]) == set(CODECS)
    for _, row in shown.iterrows():
        if not row["decodable"]:
            assert not isinstance(row["recon_file"], str)
            continue
        path = html_run / row["recon_file"]
        assert path.suffix == ".webp"
        assert path.parent == html_run / "viewer" / FOLDERS[row["codec"]] / Path(row["image"]).stem
        pixels = np.asarray(Image.open(path).convert("RGB"))
        assert pixels_sha256(pixels) == row["recon_sha256"]  # lossless: the decoded pixels
        assert psnr_rgb(dataset[row["image"]], pixels) == row["psnr_rgb"]  # the scored decode
    # one file per decoded stream: equal prefixes (stream exhausted) and ladder picks share one
    for _, group in shown[shown["decodable"]].groupby(["codec", "image", "stream_sha256"]):
        assert group["recon_file"].nunique() == 1
    ladder = shown[(shown["codec"] == LADDER) & shown["decodable"]]
    assert ladder["setting"].notna().all() and ladder["recon_file"].nunique() > 1
    assert rows[~rows["image"].isin(VIEWER_IMAGES)]["recon_file"].isna().all()
    for name in VIEWER_IMAGES:
        original = np.asarray(Image.open(html_run / "viewer/original" / f"{name[:-4]}.webp"))
        assert np.array_equal(original, dataset[name])
    units = pd.read_json(html_run / "units.jsonl", lines=True)
    assert (units[units["image"].isin(VIEWER_IMAGES)]["save_s"] > 0).all()
    assert (units[~units["image"].isin(VIEWER_IMAGES)]["save_s"] == 0).all()


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


def _page_data(run_dir: Path) -> dict:
    text = (run_dir / "report.html").read_text()
    tag = '<script type="application/json" id="bench-data">'
    start = text.index(tag) + len(tag)
    return json.loads(text[start : text.index("</script>", start)])


def test_report_html_needs_nothing_outside_the_run_folder(html_run):
    page = (html_run / "report.html").read_text()
    parser = _Links()
    parser.feed(page)
    assert PLOTLY_FILE in parser.links and "report.md" in parser.links
    for link in parser.links:
        assert link.startswith("data:") or (html_run / link).is_file(), link
    from plotly.offline import get_plotlyjs

    assert (html_run / PLOTLY_FILE).read_text() == get_plotlyjs()
    data = _page_data(html_run)
    files = [
        cell["file"]
        for image in data["viewer"]["cells"].values()
        for cells in image.values()
        for cell in cells
        if cell and cell["file"]
    ]
    assert {f.split("/")[-2] for f in files} == {"a", "c"}
    assert all((html_run / f).is_file() for f in files)
    assert "[report.html](report.html)" in (html_run / "report.md").read_text()
    # the codec table shows the same columns as the Markdown one, plus the decode time
    assert "base vs mbt2018-mean" in page and "decode s (median)" in page
    # re-rendering leaves the bundle alone (written once)
    before = (html_run / PLOTLY_FILE).stat().st_mtime_ns
    render(html_run)
    assert (html_run / PLOTLY_FILE).stat().st_mtime_ns == before


# ---- the page in a real browser ----

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


def _browser():
    """Headless Chromium under selenium; skipped where absent unless CI requires it."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        selenium_missing = True
    else:
        selenium_missing = False
    if selenium_missing or not CHROMIUM or not CHROMEDRIVER:
        reason = "needs selenium and Debian's chromium + chromium-driver (.ci/run installs them)"
        if os.environ.get("BENCH_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=700,1400"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _wait(driver, script: str, timeout: float = 10.0):
    """Poll ``return <script>`` until it is truthy; return its value."""
    end = time.monotonic() + timeout
    while True:
        value = driver.execute_script(f"return {script}")
        if value or time.monotonic() > end:
            assert value, f"timed out waiting for: {script}"
            return value
        time.sleep(0.05)


def _panels(driver) -> dict:
    return driver.execute_script(
        """const out = {};
        for (const p of document.querySelectorAll('#viewer-panels .panel')) {
          const img = p.querySelector('img.recon'), stage = p.querySelector('.stage');
          out[p.dataset.codec] = {
            src: img.hidden ? null : img.getAttribute('src'), caption: p.querySelector('.caption')
              .textContent, loaded: img.complete && img.naturalWidth, width: stage
              .getBoundingClientRect().width, scroll: p.querySelector('.viewport').scrollLeft,
            clip: img.style.clipPath, original: p.querySelector('img.original').hidden ? null
              : p.querySelector('img.original').getAttribute('src'),
            rendering: getComputedStyle(img).imageRendering};
        }
        return out;"""
    )


def test_report_in_headless_chromium(html_run):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    rows = _rows(html_run)
    curves = pd.read_csv(html_run / "curves.csv")
    driver = _browser()
    try:
        driver.get((html_run / "report.html").as_uri())
        # the plot: one trace per codec, the aggregated values, hover data, legend toggling
        _wait(driver, "document.querySelectorAll('#rd-plot .scatterlayer .trace').length === 3")
        names = driver.execute_script(
            "return document.getElementById('rd-plot').data.map(t => t.name)"
        )
        assert names == list(CODECS)
        traces = driver.execute_script("return document.getElementById('rd-plot').data")
        for trace in traces:
            mine = curves[curves["codec"] == trace["name"]].sort_values("target_bpp")
            assert trace["y"] == pytest.approx(list(mine["psnr_rgb"]))
            assert [c[1] for c in trace["customdata"]] == [3] * len(mine)  # image count in hover
            assert "image(s)" in trace["hovertemplate"] and "target" in trace["hovertemplate"]
        Select(driver.find_element(By.ID, "rd-scope")).select_by_value("b.png")
        Select(driver.find_element(By.ID, "rd-metric")).select_by_value("psnr_y")
        spiht = driver.execute_script("return document.getElementById('rd-plot').data[0]")
        mine = rows[(rows["codec"] == "spiht") & (rows["image"] == "b.png") & rows["decodable"]]
        assert spiht["y"] == pytest.approx(list(mine.sort_values("target_bpp")["psnr_y"]))
        driver.find_elements(By.CSS_SELECTOR, "#rd-plot .legend .traces")[1].click()
        _wait(driver, "document.getElementById('rd-plot').data[1].visible === 'legendonly'")
        assert driver.execute_script("return window.benchReport.state.hidden")[LADDER]

        # the viewer: the slider walks the budgets, each panel shows that budget's file
        slider = driver.find_element(By.ID, "viewer-slider")
        for index, target in enumerate(BPP):
            if index:
                slider.send_keys(Keys.ARROW_RIGHT)
            assert driver.execute_script("return window.benchReport.state.target") == index
            _wait(driver, "[...document.querySelectorAll('img.recon')].every(i => i.complete)")
            panels = _panels(driver)
            for codec in CODECS:
                row = rows[
                    (rows["codec"] == codec)
                    & (rows["image"] == "a.png")
                    & (rows["target_bpp"] == target)
                ].iloc[0]
                panel = panels[codec]
                if row["decodable"]:
                    assert panel["src"] == row["recon_file"] and panel["loaded"] == 128
                    assert f"{row['bpp']:.4f} bpp" in panel["caption"]
                    assert f"PSNR-RGB {row['psnr_rgb']:.2f} dB" in panel["caption"]
                else:
                    assert (
                        panel["src"] is None
                        and "not decodable"
                        in driver.find_element(
                            By.CSS_SELECTOR, f'.panel[data-codec="{codec}"] .missing'
                        ).text
                    )
        Select(driver.find_element(By.ID, "viewer-image")).select_by_value("c.png")
        row = rows[
            (rows["codec"] == "spiht") & (rows["image"] == "c.png") & (rows["target_bpp"] == 4.0)
        ]
        assert _panels(driver)["spiht"]["src"] == row.iloc[0]["recon_file"]

        # flip and split against the original
        driver.find_element(By.ID, "viewer-flip").click()
        panel = _panels(driver)["spiht"]
        assert panel["src"] is None and panel["original"] == "viewer/original/c.webp"
        driver.find_element(By.ID, "viewer-flip").click()
        assert _panels(driver)["spiht"]["src"] == row.iloc[0]["recon_file"]
        driver.find_element(By.CSS_SELECTOR, "input[name=viewer-mode][value=split]").click()
        assert _panels(driver)["spiht"]["clip"] == "inset(0px 0px 0px 50%)"

        # zoom: 2x nearest-neighbour, then panning one panel pans them all
        Select(driver.find_element(By.ID, "viewer-image")).select_by_value("a.png")
        driver.find_element(By.ID, "zoom-2").click()
        panels = _panels(driver)
        assert {p["width"] for p in panels.values()} == {256}
        assert {p["rendering"] for p in panels.values()} == {"pixelated"}
        # scrolled in the same task as a budget change (a race an earlier version lost)
        driver.execute_script(
            "const s = document.getElementById('viewer-slider'); s.value = 1;"
            "s.dispatchEvent(new Event('input'));"
            "document.querySelector('.viewport').scrollLeft = 40"
        )
        _wait(driver, "[...document.querySelectorAll('.viewport')].every(v => v.scrollLeft === 40)")
        viewport = driver.find_elements(By.CSS_SELECTOR, ".viewport")[2]
        ActionChains(driver).click_and_hold(viewport).move_by_offset(-25, 0).release().perform()
        _wait(driver, "[...document.querySelectorAll('.viewport')].every(v => v.scrollLeft === 65)")
        driver.find_element(By.ID, "zoom-1").click()
        assert {p["width"] for p in _panels(driver).values()} == {128}

        artifacts = Path(os.environ.get("BENCH_TEST_ARTIFACTS", ROOT / "test-artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(artifacts / "report-html.png"))

        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        events = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        requested = {
            e["params"]["request"]["url"]
            for e in events
            if e["method"] == "Network.requestWillBeSent"
        }
        assert (html_run / PLOTLY_FILE).as_uri() in requested
        assert all(url.startswith("file://") for url in requested), requested

        # a page without its bundle (a committed run folder) says how to get it back
        alone = html_run.parent / "alone"
        alone.mkdir()
        shutil.copy(html_run / "report.html", alone)
        driver.get((alone / "report.html").as_uri())
        assert "bench report" in driver.find_element(By.ID, "rd-plot").text
        assert driver.execute_script("return window.benchReport.state.image") == "a.png"
    finally:
        driver.quit()
