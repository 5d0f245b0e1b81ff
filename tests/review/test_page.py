"""`svlora review DIR --ui` started for real and driven in headless Chromium (Playwright on
the system's chromium): the queue's first clip shown with its audio and prediction,
corrected and saved as the feedback record the API writes, then the next clip."""

import os
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest

from svlora.captures import read_feedback
from tests.review.conftest import add_capture, response

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from svlora.captures import require_capture_dir

    folder = require_capture_dir(tmp_path_factory.mktemp("page") / "captures", create=True)
    captures = {
        "disputed": add_capture(folder, "clinic", response("take the metformin", "HAPPY", 0.5, "SAD", 0.4), seed=1),
        "disputed_base": add_capture(folder, "base", response("take the met for min", "NEUTRAL", 0.8, "SAD", 0.1),
                                     seed=1, kind="base"),
        "calm": add_capture(folder, "clinic", response("good morning", "NEUTRAL", 0.9, "SAD", 0.05), seed=2),
    }
    return folder, captures


@pytest.fixture(scope="module")
def page(served):
    if BROWSER is None:
        pytest.skip("no chromium installed (CI installs it from the system packages)")
    from playwright.sync_api import sync_playwright

    folder, _ = served
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "svlora.cli", "review", str(folder), "--ui", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url, deadline = f"http://127.0.0.1:{port}", time.time() + 120
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            raise AssertionError(process.stdout.read())
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=BROWSER, headless=True,
                                                 args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url)
            yield page
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_for_header(page, text: str) -> str:
    page.wait_for_function("([t]) => document.querySelector('#item-header')?.innerText.includes(t)",
                           arg=[text], timeout=30000)
    return page.locator("#item-header").inner_text()


def choose(page, field: str, value: str) -> None:
    page.locator(f"#{field} input").click()
    page.get_by_role("option", name=value, exact=True).click()


def test_the_page_plays_the_first_clip_and_saves_a_correction_as_feedback(page, served):
    folder, captures = served
    disputed = captures["disputed"]
    header = wait_for_header(page, disputed.id)
    assert header.startswith("1 of 2") and "model clinic" in header
    assert page.locator("#item-why").inner_text().startswith(
        "models disagree: clinic HAPPY 'take the metformin'; base NEUTRAL 'take the met for min'")
    link = page.locator("#clip a[download]").get_attribute("href")  # the clip the player plays
    assert page.request.get(link).body() == (folder / disputed.audio).read_bytes()
    assert "emotion HAPPY · event Speech · language en" in page.locator("#prediction textarea").input_value()
    probabilities = page.locator("#emotion-probs").inner_text()
    assert "HAPPY" in probabilities and "50%" in probabilities and "40%" in probabilities
    assert page.locator("#text textarea").input_value() == "take the metformin"
    assert page.locator("#emotion input").input_value() == "HAPPY"

    page.locator("#text textarea").fill("take the metformin twice a day")
    choose(page, "emotion", "SAD")
    page.locator("#reviewer textarea, #reviewer input").first.fill("nurse.lee")
    page.locator("#save").click()
    page.get_by_text(f"saved {disputed.id}").first.wait_for(timeout=30000)
    [record] = read_feedback(folder)
    assert (record.id, record.source, record.reviewer) == (disputed.id, "ui", "nurse.lee")
    assert record.labels == {"emotion": "SAD", "event": "Speech", "language": "en",
                             "text": "take the metformin twice a day"}
    header = wait_for_header(page, captures["calm"].id)
    assert header.startswith("2 of 2")
    assert page.locator("#text textarea").input_value() == "good morning"


def test_skip_ends_the_queue_and_a_reload_starts_from_what_is_left(page, served):
    folder, captures = served
    wait_for_header(page, captures["calm"].id)
    page.locator("#skip").click()
    page.get_by_text("Nothing left to review.").first.wait_for(timeout=30000)
    page.reload()
    header = wait_for_header(page, captures["calm"].id)  # the reviewed audio is gone for both models
    assert header.startswith("1 of 1")
    assert len(read_feedback(folder)) == 1
