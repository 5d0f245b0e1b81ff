"""`svlora demo` started for real and driven in headless Chromium (Playwright on the system's
chromium): upload a clip, press the button, read every arm's output from the page and compare
it with `svlora transcribe`; the README's screenshot comes from this test."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from svlora.adapters import load_model
from tests.adapters.test_serve import clinic_clips, free_port, wait_until_up

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "demo.png"


@pytest.fixture(scope="module")
def demo(trained_dir):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "svlora.cli", "demo", "--model", str(trained_dir / "tiny-base"),
         "--adapter", f"clinic={trained_dir / 'clinic-run/adapter'}",
         "--rules", "clinic+rules=clinic:soft_particles", "--port", str(port), "--max-seconds", "40",
         "--examples", str(trained_dir / "clinic/test.jsonl")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}"
    wait_until_up(process, url, seconds=180)
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def page(demo):
    if BROWSER is None:
        pytest.skip("no chromium installed (CI installs it from the system packages)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=BROWSER, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(demo)
        page.wait_for_selector("#run")
        yield page
        browser.close()


def arm_value(page, index: int, field: str) -> str:
    return page.locator(f"#arm{index}-{field} textarea").input_value()


def upload(page, path: Path) -> None:
    """A fresh page (an uploaded clip replaces the file input with a player), then the file."""
    page.reload()
    page.wait_for_selector("#run")
    page.locator("#clip input[type=file]").set_input_files(str(path))
    page.wait_for_selector("#clip audio, #clip .waveform-container, #clip button[aria-label]",
                           timeout=30000)


def run_clip(page, path: Path) -> None:
    upload(page, path)
    page.locator("#run").click()
    page.wait_for_function("() => { const t = document.querySelector('#arm2-raw textarea'); "
                           "return t && t.value.length > 0; }", timeout=60000)


def test_every_arm_answers_the_uploaded_clip_like_transcribe(page, trained_dir):
    clip = clinic_clips(trained_dir, 1)[0]
    run_clip(page, clip)
    names = [page.locator(f"#arm{i}-name").inner_text().strip() for i in range(3)]
    assert names == ["sensevoice-small", "clinic", "clinic+rules"]
    tiny, adapter = str(trained_dir / "tiny-base"), str(trained_dir / "clinic-run/adapter")
    expected = [load_model(tiny).transcribe([clip])[0],
                load_model(tiny, adapter).transcribe([clip])[0],
                load_model(tiny, adapter, rules="soft_particles").transcribe([clip])[0]]
    from svlora.adapters.demo import rich_text

    for index, want in enumerate(expected):
        assert arm_value(page, index, "raw") == want["raw"]
        assert arm_value(page, index, "rich") == rich_text(want["raw"])
    assert expected[0]["raw"] != expected[1]["raw"]  # the page shows two different answers
    top = want["emotion"].strip("<|>")
    assert top in page.locator("#arm1-emotion").inner_text()  # the probability bars
    SCREENSHOT.parent.mkdir(exist_ok=True)
    shot = SCREENSHOT if os.environ.get("SVLORA_UPDATE_SCREENSHOT") else trained_dir / "demo.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000


def test_long_audio_shows_segments_and_too_long_is_a_clear_message(page, trained_dir, tmp_path):
    import numpy as np
    import soundfile as sf

    clips = clinic_clips(trained_dir, 40)
    pieces = [x for c in clips for x in (sf.read(c, dtype="float32")[0], np.zeros(8000, np.float32))]
    samples = np.concatenate(pieces)
    long_file, too_long = tmp_path / "long.wav", tmp_path / "too-long.wav"
    sf.write(long_file, samples[: 16000 * 35], 16000)   # > the 30 s segment cap
    sf.write(too_long, samples[: 16000 * 45], 16000)    # > --max-seconds 40
    run_clip(page, long_file)
    tiny, adapter = str(trained_dir / "tiny-base"), str(trained_dir / "clinic-run/adapter")
    [want] = load_model(tiny, adapter).transcribe([long_file])
    assert arm_value(page, 1, "raw") == want["raw"] and len(want["segments"]) > 1
    table = page.locator("#arm1-segments").inner_text()
    for segment in want["segments"]:  # each segment's row: its span, tags and text
        assert " ".join(segment["text"].split()) in table and segment["emotion"] in table  # HTML folds spaces
        assert f"\n{segment['start']:g}\n{segment['end']:g}\n" in table
    upload(page, too_long)
    page.locator("#run").click()
    page.get_by_text("longer than --max-seconds 40").first.wait_for(timeout=30000)
    assert str(tmp_path) not in page.content()  # the server's path is not shown


def test_no_audio_is_a_clear_message(page):
    page.reload()
    page.wait_for_selector("#run")
    page.locator("#run").click()
    page.get_by_text("no audio: upload a file or record a clip first").first.wait_for(timeout=30000)


def test_hotwords_typed_on_the_page_bias_every_arm_like_load_model(page, trained_dir):
    terms = trained_dir / "demo" / "clinic" / "terms.txt"
    tiny = str(trained_dir / "tiny-base")
    clips = clinic_clips(trained_dir, 60)
    biased_runtime, plain_runtime = load_model(tiny, hotwords=str(terms)), load_model(tiny)
    clip = next(c for c in clips if biased_runtime.transcribe([c])[0]["text"]
                != plain_runtime.transcribe([c])[0]["text"])
    upload(page, clip)
    page.locator("#hotwords textarea").fill(terms.read_text())
    page.locator("#run").click()
    want = biased_runtime.transcribe([clip])[0]
    page.wait_for_function("([expected]) => { const t = document.querySelector('#arm0-raw textarea'); "
                           "return t && t.value === expected; }", arg=[want["raw"]], timeout=60000)
    assert arm_value(page, 0, "raw") == want["raw"]
