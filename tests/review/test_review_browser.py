"""`pespot review` in a real headless Chromium (issue 21's acceptance): Debian's `chromium` driven by Playwright's
Python package (`executable_path`, never a downloaded browser). `make test-browser` installs Chromium when missing
and runs these (marker `browser`; the default `make test` does not select them).

The test videos carry their frame number in the picture (conftest.frame_pattern: ten stripes, bit b of the frame
number white or black), read back from a screenshot of the <video> element: each check of "the frame shown" is a
check of pixels, not of the page's own counter.

`PESPOT_README_SCREENSHOT=docs/review.png make test-browser` also writes the README's picture of the page.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import pattern_index, write_video

from pespot.infer import VideoPrediction, write_scores_npz
from pespot.review.load import load_session
from pespot.review.server import ReviewServer

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
CLASSES = ["serve", "hit", "bounce"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file() or shutil.which("chromium") is None:
        pytest.fail(f"{CHROMIUM} not found: `make browser` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


def serve(session, cache: Path) -> ReviewServer:
    srv = ReviewServer(session, cache_dir=cache)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def open_page(browser, srv):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(srv.url)
    wait_frame(page, 0)
    page.errors = errors
    return page


def wait_frame(page, frame: int) -> None:
    """Until the page says it shows ``frame`` and the video presented it (data-settled)."""
    page.wait_for_selector(f"body[data-settled='1'][data-frame='{frame}']", state="attached", timeout=20000)


def shown(page, frame: int) -> int:
    """The frame number read from the pixels of the video once the page settled on ``frame``."""
    from PIL import Image

    wait_frame(page, frame)
    png = page.locator("#video").screenshot()
    return pattern_index(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))


def go_to(page, frame: int) -> None:
    page.fill("#frame-input", str(frame))
    page.press("#frame-input", "Enter")
    wait_frame(page, frame)


@pytest.fixture
def labelling(tmp_path) -> Path:
    """class.txt, a 60-frame 25 fps pattern video, four predictions with per-frame scores, and one earlier label."""
    (tmp_path / "class.txt").write_text("".join(c + "\n" for c in CLASSES))
    write_video(tmp_path / "clip.mp4", 60, width=320, height=240, faststart=True, bframes=0)
    predictions = [(10, "serve", 0.9), (20, "hit", 0.8), (30, "bounce", 0.7), (45, "hit", 0.6)]
    (tmp_path / "pred.json").write_text(json.dumps([{"video": "clip", "fps": 25, "events": [
        {"frame": f, "label": c, "score": s} for f, c, s in predictions]}]))
    # per-frame scores as `infer --save-scores` writes them: a bump around each prediction (made up for the page)
    frames = np.arange(60)[:, None]
    scores = np.zeros((60, 4), dtype=np.float32)
    for f, c, s in predictions:
        column = 1 + CLASSES.index(c)
        scores[:, column] = np.maximum(scores[:, column], s * np.exp(-((frames[:, 0] - f) / 2.5) ** 2))
    write_scores_npz(VideoPrediction(video="clip", fps=25.0, scores=scores), CLASSES, tmp_path / "scores")
    (tmp_path / "labels.json").write_text(json.dumps([{"video": "clip", "num_frames": 60, "fps": 25.0, "events": [
        {"frame": 50, "label": "bounce", "comment": ""}]}]))
    return tmp_path


def test_review_edit_save_frame_by_frame(browser, labelling, tmp_path):
    session = load_session([str(labelling / "class.txt"), str(labelling / "pred.json"), str(labelling / "clip.mp4")],
                           scores=str(labelling / "scores"), progress=False)
    srv = serve(session, tmp_path / "cache")
    state = session.state()["videos"][0]
    pred = {(p["frame"], p["label"]): p["uid"] for p in state["predictions"]}
    earlier = state["labels"][0]["uid"]
    page = open_page(browser, srv)
    try:
        # step to a frame: one frame, then one second (25 frames), then back one
        for _ in range(7):
            page.keyboard.press("ArrowRight")
        assert shown(page, 7) == 7
        page.keyboard.press("Shift+ArrowRight")
        assert shown(page, 32) == 32
        page.keyboard.press("ArrowLeft")
        assert shown(page, 31) == 31 and page.input_value("#frame-input") == "31"
        assert page.text_content("#time") == "0:01.240"
        # accept one prediction: click it in the list, the video shows its frame, A
        page.click(f"#events tr[data-uid='{pred[(10, 'serve')]}']")
        assert shown(page, 10) == 10
        page.keyboard.press("a")
        # move another by one frame: it becomes a label one frame on, and the video follows
        page.click(f"#events tr[data-uid='{pred[(20, 'hit')]}']")
        assert shown(page, 20) == 20
        page.keyboard.press(".")
        assert shown(page, 21) == 21
        # add one (class 3 = bounce) at frame 40
        page.keyboard.press("Escape")
        go_to(page, 40)
        page.keyboard.press("3")
        page.keyboard.press("e")
        assert shown(page, 40) == 40
        # add one and delete it
        page.keyboard.press("Escape")
        go_to(page, 55)
        page.keyboard.press("1")
        page.keyboard.press("e")
        assert page.locator("#events tr[data-kind='label'][data-frame='55']").count() == 1
        page.keyboard.press("Delete")
        assert page.locator("#events tr[data-frame='55']").count() == 0
        # relabel the earlier label (bounce at 50) as hit
        page.click(f"#events tr[data-uid='{earlier}']")
        assert shown(page, 50) == 50
        page.keyboard.press("2")
        # reject a prediction, then undo that: it is back, open
        page.click(f"#events tr[data-uid='{pred[(30, 'bounce')]}']")
        page.keyboard.press("x")
        assert page.locator(f"#events tr[data-uid='{pred[(30, 'bounce')]}']").count() == 0
        page.keyboard.press("Control+z")
        assert page.locator(f"#events tr[data-uid='{pred[(30, 'bounce')]}']").count() == 1
        # the list sorts by score (high first, then low first) and the threshold hides weak predictions
        def predicted() -> list[int]:
            return [int(f) for f in page.eval_on_selector_all(
                "#events tr[data-kind='pred']", "rows => rows.map(r => r.dataset.frame)")]

        assert predicted() == [30, 45]
        page.click("#events th[data-sort='score']")
        assert predicted() == [30, 45]
        page.click("#events th[data-sort='score']")
        assert predicted() == [45, 30]
        page.fill("#threshold", "0.65")
        assert predicted() == [30]
        page.fill("#threshold", "0.5")
        page.click("#events th[data-sort='frame']")
        if os.environ.get("PESPOT_README_SCREENSHOT"):
            page.click(f"#events tr[data-uid='{pred[(45, 'hit')]}']")
            wait_frame(page, 45)
            page.screenshot(path=os.environ["PESPOT_README_SCREENSHOT"])
        page.click("#save")
        page.wait_for_function("document.getElementById('message').textContent.startsWith('saved (version 1)')")
        assert page.errors == []
    finally:
        page.close()
        srv.shutdown()
        srv.server_close()
    # the files, frame by frame: the predictions not reviewed (30 bounce, 45 hit) are not labels
    expected = [(10, "serve"), (21, "hit"), (40, "bounce"), (50, "hit")]
    saved = json.loads((labelling / "labels.json").read_text())
    assert [(e["frame"], e["label"]) for e in saved[0]["events"]] == expected
    assert saved[0]["num_frames"] == 60 and saved[0]["num_events"] == 4
    rows = list(csv.reader((labelling / "labels.csv").read_text().splitlines()))[1:]
    assert rows == [["clip", str(f), f"{f / 25:.3f}", c] for f, c in expected]
    reviewed = json.loads((labelling / "labels.review.json").read_text())["videos"]["clip"]
    assert sorted(map(tuple, reviewed["accepted"])) == [(10, "serve"), (20, "hit")] and reviewed["rejected"] == []
    assert (labelling / "class.txt").read_text() == "serve\nhit\nbounce\n"


def test_a_variable_frame_rate_video_shows_the_frame_the_label_names(browser, tmp_path):
    gaps = [40, 40, 120, 20, 20, 160, 33, 33, 34, 400, 40, 40, 40, 40, 40, 400, 40, 40, 40] * 2
    times = np.concatenate([[0], np.cumsum(gaps)]).tolist()
    write_video(tmp_path / "phone.mp4", len(times), width=160, height=120, timestamps_ms=times, faststart=True,
                bframes=0)
    (tmp_path / "class.txt").write_text("serve\nhit\n")
    (tmp_path / "phone.json").write_text(json.dumps([{"video": "phone", "num_frames": len(times), "fps": 25.0,
                                                      "events": [{"frame": 3, "label": "hit"},
                                                                 {"frame": 17, "label": "serve"},
                                                                 {"frame": 33, "label": "hit"}]}]))
    session = load_session([str(tmp_path / "phone.json"), str(tmp_path / "phone.mp4")], progress=False)
    srv = serve(session, tmp_path / "cache")
    page = open_page(browser, srv)
    try:
        assert "frame-exact transcode" in page.text_content("#media-info")
        for row in page.locator("#events tbody tr").all():
            frame = int(row.get_attribute("data-frame"))
            row.click()
            assert shown(page, frame) == frame
        for frame in (0, 1, 2, 9, 10, 25, len(times) - 1):  # around the long gaps, and the last frame
            go_to(page, frame)
            assert shown(page, frame) == frame
        go_to(page, 5)
        page.select_option("#speed", "0.25")
        page.keyboard.press(" ")
        page.wait_for_timeout(1500)
        page.keyboard.press(" ")  # pause: the page settles on the frame on screen
        page.wait_for_selector("body[data-settled='1']", state="attached", timeout=20000)
        frame = int(page.get_attribute("body", "data-frame"))
        assert frame > 5 and shown(page, frame) == frame
        assert page.errors == []
    finally:
        page.close()
        srv.shutdown()
        srv.server_close()


def test_two_pages_saving_lose_nothing(browser, labelling, tmp_path):
    session = load_session([str(labelling / "class.txt"), str(labelling / "clip.mp4")], progress=False)
    srv = serve(session, tmp_path / "cache")
    first, second = open_page(browser, srv), open_page(browser, srv)
    try:
        go_to(first, 5)
        first.keyboard.press("1")
        first.keyboard.press("e")
        first.click("#save")
        first.wait_for_function("document.getElementById('message').textContent.startsWith('saved (version 1)')")
        go_to(second, 8)
        second.keyboard.press("2")
        second.keyboard.press("e")
        second.click("#save")  # refused: the first page saved since; the second merges its edit onto those labels
        second.wait_for_function("document.getElementById('message').textContent.includes('Another page saved first')")
        assert second.locator("#events tr[data-kind='label']").count() == 3  # 50 bounce, 5 serve, 8 hit
        second.click("#save")
        second.wait_for_function("document.getElementById('message').textContent.startsWith('saved (version 2)')")
    finally:
        first.close()
        second.close()
        srv.shutdown()
        srv.server_close()
    saved = json.loads((labelling / "labels.json").read_text())
    assert [(e["frame"], e["label"]) for e in saved[0]["events"]] == [(5, "serve"), (8, "hit"), (50, "bounce")]
