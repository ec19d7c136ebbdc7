"""End to end in a real browser: Debian's headless Chromium (software WebGL2) driven by Selenium.

Opens the page of a server started here, picks the bundled stroke T2 + FLAIR from --data, fuses with the bundled
model, waits for the linked views, and checks the screenshot: the fused view is not blank, and its axial tile
matches the fused volume's axial slice (correlation over the tile NiiVue reports drawing). The screenshot is
kept as docs/figures/web_page.png.
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("uvicorn", reason="the web extra is not installed: pip install 'EdranFusionLib[web]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (make test installs it)")

from conftest import REPO  # noqa: E402
from PIL import Image  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from EdranFusionLib.choices import strategy_description  # noqa: E402
from EdranFusionLib.io.volumes import axial_axis, read_volume  # noqa: E402
from EdranFusionLib.io.weights import default_strategy_of  # noqa: E402
from EdranFusionLib.web.assets import NIIVUE_BUNDLE  # noqa: E402
from EdranFusionLib.web.client import FusionClient, running_server  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                       reason="Debian chromium + chromium-driver missing: run 'make browser'"),
    pytest.mark.skipif(not NIIVUE_BUNDLE.is_file(), reason="web assets not fetched: run 'make web-assets'"),
    pytest.mark.timeout(1200),  # about a minute on 2 free cores; far longer on a shared, loaded machine
]
FIGURE = REPO / "docs" / "figures" / "web_page.png"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-unsafe-swiftshader", "--window-size=1400,1500", "--force-device-scale-factor=1")


@pytest.fixture()
def browser(tmp_path: Path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _state(driver) -> str:  # noqa: ANN001
    return driver.find_element("tag name", "body").get_attribute("data-state")


def _correlation(tile: np.ndarray, picture: np.ndarray, keep: np.ndarray) -> float:
    return float(np.corrcoef(tile[keep], picture[keep])[0, 1])


def _best_match(tile: np.ndarray, keep: np.ndarray, volume: np.ndarray) -> float:
    """Highest correlation of the tile with the middle axial slices under any flip/transpose (display order)."""
    best = -1.0
    middle = volume.shape[0] // 2
    for index in range(middle - 2, middle + 3):
        base = volume[index].astype(np.float64)
        for variant in (base, base.T):
            for flipped in (variant, variant[::-1], variant[:, ::-1], variant[::-1, ::-1]):
                picture = Image.fromarray(flipped.astype(np.float32)).resize(tile.shape[::-1], Image.BILINEAR)
                best = max(best, _correlation(tile, np.asarray(picture), keep))
    return best


def _set(driver, element_id: str, value: str) -> None:  # noqa: ANN001
    """Change a control the way a user does (value, then the input/change events), then let NiiVue redraw."""
    driver.execute_script("const e = document.getElementById(arguments[0]); e.value = arguments[1];"
                          "e.dispatchEvent(new Event('input')); e.dispatchEvent(new Event('change'));",
                          element_id, value)
    time.sleep(1.0)


def _axial_tile(png: bytes, tiles: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fused canvas's axial tile from a screenshot: RGB, gray, and the pixels off the red crosshair."""
    screenshot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float64)
    left, top, slices = tiles
    x, y, width, height = (round(v) for v in next(box for kind, box in slices if kind == 0))
    tile_rgb = screenshot[round(top) + y: round(top) + y + height, round(left) + x: round(left) + x + width]
    keep = np.abs(tile_rgb[..., 0] - tile_rgb[..., 1]) < 20
    return tile_rgb, tile_rgb.mean(axis=2), keep


def _axial_stack(path: Path) -> np.ndarray:
    image = read_volume(path)
    return np.moveaxis(sitk.GetArrayFromImage(image), axial_axis(image), 0)


def test_fuse_the_stroke_sample_in_a_real_browser(browser, tmp_path: Path) -> None:  # noqa: ANN001
    with running_server("--data", str(REPO / "EdranFusionLib" / "sample_data")) as server:
        browser.get(server.url)
        WebDriverWait(browser, 120).until(lambda d: _state(d) == "idle")
        assert "CPU" in browser.find_element("id", "device-label").text or "GPU" in browser.find_element(
            "id", "device-label").text
        strategy = Select(browser.find_element("id", "strategy"))
        assert strategy.first_selected_option.get_attribute("value") == default_strategy_of("general")
        Select(browser.find_element("id", "model")).select_by_value("ct-mri")  # its own default comes with it
        assert strategy.first_selected_option.get_attribute("value") == default_strategy_of("ct-mri")
        note = browser.find_element("id", "strategy-note")
        assert note.text == strategy_description(default_strategy_of("ct-mri"))
        strategy.select_by_value("sfnn-max")  # what the chosen strategy does follows the choice
        assert note.text.startswith("the paper's method")
        Select(browser.find_element("id", "model")).select_by_value("general")
        Select(browser.find_element("id", "source-a")).select_by_value("stroke/T2.nii.gz")
        Select(browser.find_element("id", "source-b")).select_by_value("stroke/FLAIR.nii.gz")
        browser.find_element("id", "fuse").click()
        seen = set()
        deadline = time.monotonic() + 600
        while (state := _state(browser)) != "shown" and time.monotonic() < deadline:
            assert state not in ("failed", "cancelled"), browser.find_element("id", "error").text
            seen.add(browser.find_element("id", "progress").get_attribute("value"))
            time.sleep(0.3)
        assert state == "shown", f"views not shown; status {browser.find_element('id', 'status').text}"
        assert any(0 < float(v) < 1 for v in seen), seen  # the bar moved with the fuser's progress
        time.sleep(1.0)  # let the last draw land
        job_id = browser.execute_script("return currentJob")
        tiles = browser.execute_script(
            "const r = document.getElementById('view-fused').getBoundingClientRect();"
            "return [r.left, r.top, views.fused.screenSlices.map(s => [s.axCorSag, s.leftTopWidthHeight])]")
        png = browser.get_screenshot_as_png()
        _set(browser, "opacity", "0")  # the slider's other end: the base volume A alone
        base_only = browser.get_screenshot_as_png()
        _set(browser, "opacity", "1")
        _set(browser, "cmap-fused", "hot")  # a SPECT/PET colour map on the fused volume
        hot = browser.get_screenshot_as_png()
        fused = FusionClient(server.url).request("GET", f"/api/jobs/{job_id}/view/fused.nii.gz")[1]
    FIGURE.write_bytes(png)
    tile_rgb, gray, keep = _axial_tile(png, tiles)
    assert gray.std() > 20 and (gray > 30).mean() > 0.2, "the fused view is blank"
    (tmp_path / "fused.nii.gz").write_bytes(fused)
    stack = _axial_stack(tmp_path / "fused.nii.gz")
    t2_stack = _axial_stack(REPO / "EdranFusionLib" / "sample_data" / "stroke" / "T2.nii.gz")
    match, t2_match = _best_match(gray, keep, stack), _best_match(gray, keep, t2_stack)
    _rgb, base_gray, base_keep = _axial_tile(base_only, tiles)
    base_match, base_t2_match = _best_match(base_gray, base_keep, stack), _best_match(base_gray, base_keep, t2_stack)
    hot_rgb = _axial_tile(hot, tiles)[0]
    print(f"axial tile vs fused slice r={match:.3f}, vs T2 slice r={t2_match:.3f}; opacity 0: vs fused "
          f"r={base_match:.3f}, vs T2 r={base_t2_match:.3f}")
    assert match > 0.8, f"the fused view does not show the fused volume (r={match:.3f})"
    assert match > t2_match, f"the fused view looks more like A than the fused volume ({match:.3f} vs {t2_match:.3f})"
    assert base_t2_match > 0.8 and base_t2_match > base_match, "opacity 0 does not show A alone"
    assert np.abs(hot_rgb[..., 0] - hot_rgb[..., 2]).mean() > 20, "the hot colour map is not applied"
