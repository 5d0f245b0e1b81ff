"""`svlora demo`: a Gradio page that answers one clip with every arm side by side — the base,
each adapter, and the rules / cascade pipelines — through the server's model pool (one
decoding of the clip, each arm's rows with its own adapter, then each pipeline's
post-processing); and a microphone tab that transcribes turn by turn as you speak, through the
realtime endpoint's session (svlora.adapters.realtime: Silero turns, or a Commit button)."""

from __future__ import annotations

import os
from pathlib import Path

from svlora.adapters.pool import ModelPool, ServeSettings
from svlora.decoding import prepare_file
from svlora.errors import SvloraError

SEGMENT_COLUMNS = ["start", "end", "language", "emotion", "event", "text"]
TURN_COLUMNS = ["start", "end", "emotion", "event", "language", "text"]


def rich_text(raw: str) -> str:
    """The transcription as FunASR's rich_transcription_postprocess renders it (emoji for the
    emotion and events)."""
    from funasr.utils.postprocess_utils import rich_transcription_postprocess

    return rich_transcription_postprocess(raw)


def arm_outputs(result: dict) -> tuple[str, str, dict, list[list]]:
    """What one arm's column shows: rich text, raw tags, emotion probabilities, segments."""
    segments = result.get("segments") or []
    rows = [[s["start"], s["end"], s.get("language"), s.get("emotion"), s.get("event"), s.get("text")]
            for s in segments]
    probabilities = {tag.strip("<|>"): p for tag, p in (result.get("emotion_probs") or {}).items()}
    return rich_text(result["raw"]), result["raw"], probabilities, rows


def transcribe_all(pool: ModelPool, path: str | None, language: str, itn: bool,
                   hotwords: str = "") -> list[dict]:
    """Every arm's result for one clip (arms in pool.names() order); `hotwords` (one term per
    line) bias every arm's text, on top of the server's --hotwords."""
    if not path:
        raise SvloraError("no audio: upload a file or record a clip first")
    biasing = pool.hotwords_for(hotwords)
    prepared = prepare_file(pool.base, path, max_file_seconds=pool.settings.max_audio_seconds,
                            vad_loader=pool.vad_model)
    routes = [pool.acquire(name) for name in pool.names()]
    try:
        stage1 = list(dict.fromkeys(r.stage1 for r in routes))  # a pipeline reuses its model's decoding
        decoded = pool.decode([prepared] * len(stage1), stage1, language, "withitn" if itn else "woitn",
                              with_pooled=any(r.cascade is not None for r in routes),
                              hotwords=[biasing] * len(stage1))
        by_stage1 = dict(zip(stage1, decoded))
        finished = pool.finish(routes, [by_stage1[route.stage1] for route in routes])
        for result in finished:
            if isinstance(result, Exception):
                raise result
        return finished
    finally:
        for route in routes:
            pool.release(route)


def new_mic_session(pool: ModelPool, model: str, language: str, vad: bool):
    from svlora.adapters.realtime import RealtimeSession

    session = RealtimeSession(model, pool.names, pool.base.labels.decode_languages)
    session.update({"input_audio_transcription": {"model": model, "language": language},
                    **({} if vad else {"turn_detection": None})})
    return {"session": session, "rows": [], "settings": (model, language, vad)}


def mic_turn_rows(pool: ModelPool, turns) -> list[list]:
    """Each committed turn decoded by its model (and its pipeline's post-processing), as a
    row of the microphone tab's table."""
    from svlora.adapters.realtime import to_model_rate
    from svlora.decoding import prepare_waveform

    rows = []
    for turn in turns:
        if turn.samples.size < 0.1 * turn.rate:
            continue  # a click of the Commit button with (almost) no audio
        route = pool.acquire(turn.model)
        try:
            prepared = prepare_waveform(pool.base, to_model_rate(turn.samples, turn.rate), turn.item_id,
                                        vad_loader=pool.vad_model)
            [decoded] = pool.decode([prepared], [route.stage1], turn.language, "woitn",
                                    with_pooled=route.cascade is not None, hotwords=[pool.hotwords])
            [result] = pool.finish([route], [decoded])
        finally:
            pool.release(route)
        if isinstance(result, Exception):
            raise result
        rows.append([turn.start_ms / 1000, turn.end_ms / 1000, result.get("emotion"), result.get("event"),
                     result.get("language"), result["text"]])
    return rows


def mic_chunk(pool: ModelPool, state: dict | None, chunk, model: str, language: str,
              vad: bool) -> tuple[dict, list[list]]:
    """One chunk from the browser's microphone ((rate, int16 or float samples)) into the
    session; a changed setting starts a new session."""
    import numpy as np
    import soxr

    if state is None or state["settings"] != (model, language, vad):
        state = new_mic_session(pool, model, language, vad)
    if chunk is None:
        return state, state["rows"]
    rate, samples = chunk
    samples = np.asarray(samples)
    scale = 32768.0 if samples.dtype.kind == "i" else 1.0
    mono = (samples.mean(axis=1) if samples.ndim == 2 else samples).astype(np.float32) / scale
    session = state["session"]
    if rate != session.rate and mono.size:
        mono = soxr.resample(mono, rate, session.rate).astype(np.float32)
    _, turns = session.add_samples(mono)
    state["rows"] = state["rows"] + mic_turn_rows(pool, turns)
    return state, state["rows"]


def mic_commit(pool: ModelPool, state: dict | None) -> tuple[dict | None, list[list]]:
    """The Commit button: what was said since the last turn becomes a turn."""
    if state is None or not state["session"].buffer.size:
        return state, state["rows"] if state else []
    _, turns = state["session"].commit()
    state["rows"] = state["rows"] + mic_turn_rows(pool, turns)
    return state, state["rows"]


def example_clips(manifest: str | None, count: int = 6) -> list[str]:
    if not manifest:
        return []
    from svlora.manifest import read_manifest

    return [row.source for row in read_manifest(manifest)[:count]]


def build_demo(pool: ModelPool, examples: list[str]):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    names = pool.names()
    with gr.Blocks(title="svlora A/B") as demo:
        with gr.Tab("one clip, every arm"):
            gr.Markdown(f"# svlora A/B\nOne clip, every arm: {', '.join(f'`{n}`' for n in names)}. "
                        f"Clips up to {pool.settings.max_audio_seconds:g} s; longer files are cut at "
                        "pauses and each segment gets its own tags.")
            with gr.Row():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="clip",
                                 elem_id="clip")
                with gr.Column():
                    language = gr.Dropdown(list(pool.base.labels.decode_languages), value="auto", label="language", elem_id="language")
                    itn = gr.Checkbox(value=False, label="ITN (punctuation, numbers)", elem_id="itn")
                    hotwords = gr.Textbox(label="hotwords (one term per line; biases every arm)",
                                          lines=3, elem_id="hotwords")
                    button = gr.Button("Transcribe with every arm", variant="primary", elem_id="run")
            outputs = []
            with gr.Row():
                for index, name in enumerate(names):
                    with gr.Column(min_width=240):
                        gr.Markdown(f"### {name}", elem_id=f"arm{index}-name")
                        outputs += [
                            gr.Textbox(label="transcription", elem_id=f"arm{index}-rich", interactive=False),
                            gr.Textbox(label="raw tags", elem_id=f"arm{index}-raw", interactive=False),
                            gr.Label(label="emotion probabilities", num_top_classes=5, elem_id=f"arm{index}-emotion"),
                            gr.Dataframe(headers=SEGMENT_COLUMNS, label="segments (long audio)",
                                         elem_id=f"arm{index}-segments", interactive=False),
                        ]
            if examples:
                gr.Examples(examples=[[path] for path in examples], inputs=[audio], label="examples")

            def run(path, chosen_language, use_itn, terms):
                try:
                    results = transcribe_all(pool, path, chosen_language, use_itn, terms or "")
                except SvloraError as error:
                    raise gr.Error(str(error).replace(str(path), Path(str(path)).name)) from None
                return [value for result in results for value in arm_outputs(result)]

            button.click(run, inputs=[audio, language, itn, hotwords], outputs=outputs)
        with gr.Tab("microphone (realtime)"):
            gr.Markdown("Speak: each turn (ended by a pause, or by **Commit**) is transcribed with its "
                        "emotion and event, through the realtime endpoint's session rules.")
            with gr.Row():
                mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="microphone",
                               elem_id="mic")
                with gr.Column():
                    mic_model = gr.Dropdown(names, value=names[0], label="model", elem_id="mic-model")
                    mic_language = gr.Dropdown(list(pool.base.labels.decode_languages), value="auto",
                                               label="language", elem_id="mic-language")
                    mic_vad = gr.Checkbox(value=True, label="end turns at pauses (Silero VAD)", elem_id="mic-vad")
                    commit = gr.Button("Commit turn", elem_id="mic-commit")
            turns = gr.Dataframe(headers=TURN_COLUMNS, label="turns", elem_id="mic-turns", interactive=False)
            state = gr.State()
            mic.stream(lambda chunk, st, m, lang, v: mic_chunk(pool, st, chunk, m, lang, v),
                       inputs=[mic, state, mic_model, mic_language, mic_vad], outputs=[state, turns],
                       stream_every=0.5)
            commit.click(lambda st: mic_commit(pool, st), inputs=[state], outputs=[state, turns])
    return demo


def launch_demo(settings: ServeSettings, host: str = "127.0.0.1", port: int = 7860,
                examples_manifest: str | None = None) -> None:
    pool = ModelPool(settings)
    build_demo(pool, example_clips(examples_manifest)).launch(server_name=host, server_port=port,
                                                              share=False, show_error=True)
