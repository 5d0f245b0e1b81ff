"""`svlora demo`: a Gradio page that answers one clip with every arm side by side — the base,
each adapter, and the rules / cascade pipelines — through the server's model pool (one
decoding of the clip, each arm's rows with its own adapter, then each pipeline's
post-processing)."""

from __future__ import annotations

import os
from pathlib import Path

from svlora.adapters.pool import ModelPool, ServeSettings
from svlora.decoding import prepare_file
from svlora.errors import SvloraError

SEGMENT_COLUMNS = ["start", "end", "language", "emotion", "event", "text"]


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
    return demo


def launch_demo(settings: ServeSettings, host: str = "127.0.0.1", port: int = 7860,
                examples_manifest: str | None = None) -> None:
    pool = ModelPool(settings)
    build_demo(pool, example_clips(examples_manifest)).launch(server_name=host, server_port=port,
                                                              share=False, show_error=True)
