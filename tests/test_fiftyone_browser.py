"""The FiftyOne App in a real browser (``make test-browser``): clips open, play and are audible.

Drives Debian's Chromium (``apt-get install chromium``) with Playwright for Python through
``executable_path`` (``playwright install`` downloads its own browser and fails offline). On a
20-clip data set: the grid loads, a clip opens without an error overlay, the Audio panel's player
loads the clip (HTTP 200/206, ``readyState >= 2``, the clip's duration, not muted, a volume), and
the ``playback`` slice's video plays with its stored metadata (no ffprobe: nothing here has a
system ffmpeg). Screenshots go to ``$AUDIOLENS_BROWSER_OUT`` (``make test-browser`` sets it to
``runs/test-browser/<time>``), else the test's temporary folder.

Skipped unless ``AUDIOLENS_BROWSER_TESTS=1`` (``make test-browser`` sets it) and a Chromium is found.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from tests.process_helpers import free_port

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group(name="fiftyone")]

CHROMIUM = next(
    (
        p
        for p in (os.environ.get("AUDIOLENS_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"))
        if p
    ),
    None,
)

if os.environ.get("AUDIOLENS_BROWSER_TESTS") != "1":
    pytest.skip("browser tests run with make test-browser (AUDIOLENS_BROWSER_TESTS=1)", allow_module_level=True)
if CHROMIUM is None:
    pytest.skip("no Chromium: apt-get install -y chromium", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (never playwright install)")

ERROR_TEXTS = ("You must have ffmpeg", "GraphQL API Error", "Something went wrong", "Failed to decode")
# FiftyOne's video looker plays from a <video> element it keeps off the page: record every media element made
TRACK_MEDIA = """(() => { const make = document.createElement.bind(document); window.__audiolensMedia = [];
    document.createElement = function (tag, options) { const element = make(tag, options);
        if (/^(video|audio)$/i.test(String(tag))) window.__audiolensMedia.push(element);
        return element; }; })();"""
MEDIA_STATE = """(scope) => Array.from(scope === 'created video'
        ? window.__audiolensMedia.filter(e => e.tagName === 'VIDEO') : document.querySelectorAll(scope)).map(e => ({
    tag: e.tagName.toLowerCase(), src: e.currentSrc || e.src, readyState: e.readyState,
    duration: e.duration, muted: e.muted, volume: e.volume, controls: e.controls}))"""


@pytest.fixture(scope="module")
def app(tmp_path_factory, fsdd_manifest):
    """A 20-clip data set (2 per digit) with playback videos, the Audio plugin, and the App on a free port."""
    from lib.core.audio import audio_info
    from lib.explorer.fiftyone_audio import fo_build_audio_dataset, fo_connect, fo_geolocations
    from lib.explorer.fo_app import fo_audio_spaces, fo_install_audio_plugin, fo_launch_app, fo_stop_app
    from lib.explorer.spectrogram_media import spectrogram_videos
    from tests.explorer_helpers import render_previews

    root = tmp_path_factory.mktemp("browser")
    fo_connect(root / "db", root / "datasets")
    manifest = fsdd_manifest.groupby("label").head(2).reset_index(drop=True)
    manifest["duration"] = [audio_info(p)["duration"] for p in manifest.path]
    pngs, ok, _, _ = render_previews(manifest.path, root / "png")
    videos, failed = spectrogram_videos(ok, pngs, root / "mp4", progress=False)
    assert not failed
    import numpy as np

    vectors = np.random.default_rng(0).normal(size=(len(manifest), 8)).astype(np.float32)
    lonlat, source = fo_geolocations(manifest)
    ds = fo_build_audio_dataset(
        f"browser-{uuid.uuid4().hex[:8]}",
        manifest,
        vectors,
        pngs,
        video_paths=videos,
        lonlat=lonlat,
        geo_source=source,
        progress=False,
    )
    fo_install_audio_plugin(root / "plugins")
    port = free_port()
    session = fo_launch_app(ds, port=port, when="always", spaces=fo_audio_spaces())
    out = Path(os.environ.get("AUDIOLENS_BROWSER_OUT") or root / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    yield {"url": f"http://127.0.0.1:{port}/", "dataset": ds, "manifest": manifest, "out": out}
    fo_stop_app(session)
    ds.delete()


def _wait_for_media(page, scope: str, timeout: float = 60.0) -> dict:
    """The media element matching the CSS ``scope`` once it can play (``readyState >= 2``)."""
    deadline, state = time.time() + timeout, []
    while time.time() < deadline:
        state = [m for m in page.evaluate(MEDIA_STATE, scope) if m["src"]]
        ready = [m for m in state if m["readyState"] >= 2]
        if ready:
            return ready[-1]
        page.wait_for_timeout(500)
    raise AssertionError(f"no {scope} element reached readyState >= 2 within {timeout:.0f} s: {state}")


def _dismiss_popups(page) -> None:
    """FiftyOne greets a new browser with an "Explore Enterprise" popover that catches clicks."""
    try:
        page.get_by_text("Dismiss", exact=True).click(timeout=5000)
    except playwright_api.Error:
        page.keyboard.press("Escape")


def _assert_no_error_overlay(page, where: str) -> None:
    text = page.inner_text("body")
    found = [t for t in ERROR_TEXTS if t in text]
    assert not found, f"{where}: the App shows {found}"


def test_a_clip_opens_plays_and_is_audible(app):
    manifest, out = app["manifest"], app["out"]
    responses = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.add_init_script(TRACK_MEDIA)
        page.on("response", lambda r: responses.append((r.status, r.url)) if "/media?" in r.url else None)
        deadline = time.time() + 120
        while True:  # the App's server needs a few seconds to answer
            try:
                page.goto(app["url"], timeout=15000)
                break
            except playwright_api.Error:
                if time.time() > deadline:
                    raise
                time.sleep(2)
        page.locator("[data-cy=looker]").first.wait_for(timeout=90000)
        page.wait_for_timeout(2000)
        assert page.locator("[data-cy=panel-content-audiolens_audio]").count() == 1, "the Audio panel is open"
        page.screenshot(path=str(out / "1-grid.png"))
        _assert_no_error_overlay(page, "grid")
        _dismiss_popups(page)

        # open the first clip: the modal, then its Audio tab
        page.locator("[data-cy=looker]").first.click(position={"x": 40, "y": 60})
        page.locator("[data-cy=modal]").wait_for(timeout=30000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out / "2-modal.png"))
        _assert_no_error_overlay(page, "modal")
        page.locator("[data-cy=modal] [data-cy=panel-tab-audiolens_audio]").click()
        audio = _wait_for_media(page, "[data-cy=modal] audio")
        page.screenshot(path=str(out / "3-audio-panel.png"))
        first = manifest.iloc[0]
        assert Path(first.path).name in audio["src"].replace("%2F", "/"), audio
        assert abs(audio["duration"] - first.duration) < 0.05, (audio, first.duration)
        assert audio["controls"] and not audio["muted"] and audio["volume"] > 0, "audible without a hidden key"

        # the playback slice: the group's video, with its stored metadata
        page.locator("[data-cy=modal] [data-cy=panel-tab-fo-sample-modal-plugin]").click()
        carousel = page.locator("[data-cy=group-carousel] [data-cy=looker]")
        carousel.nth(1).wait_for(timeout=30000)
        assert carousel.count() == 2, "a group holds the spectrogram and the playback video"
        carousel.nth(1).click()
        page.wait_for_timeout(3000)
        page.screenshot(path=str(out / "4-playback.png"))
        video = _wait_for_media(page, "created video")
        _assert_no_error_overlay(page, "playback slice")
        assert video["src"].split("filepath=")[-1].endswith(".mp4") or ".mp4" in video["src"]
        assert abs(video["duration"] - first.duration) < 0.15, (video, first.duration)
        browser.close()
    media = [(status, url) for status, url in responses if ".wav" in url or ".mp4" in url]
    assert media and all(status in (200, 206) for status, _ in media), media
    assert any(".wav" in url for _, url in media) and any(".mp4" in url for _, url in media)
    for name in ("1-grid.png", "2-modal.png", "3-audio-panel.png", "4-playback.png"):
        assert (out / name).stat().st_size > 10_000
