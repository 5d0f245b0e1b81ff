"""Render the A/B report: a verdict first, then Markdown tables, confusion PNGs (counts and
row-normalised) and a self-contained HTML page with the images embedded."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from svlora.eval.scoring import HEADLINE, TEXT_METRICS
from svlora.eval.terms import TERM_METRICS
from svlora.labels import tag_name
from svlora.io import atomic_path

LABELS = {"error_rate": "error rate", "cer": "CER", "wer": "WER", "empty_rate": "empty outputs",
          "emotion_accuracy": "emotion acc", "emotion_ua": "emotion UA",
          "emotion_macro_f1": "emotion macro-F1", "term_recall": "term recall",
          "term_precision": "term precision", "term_f1": "term F1",
          "biased_error_rate": "B-error", "unbiased_error_rate": "U-error"}


def _tag(tag: str | None) -> str:
    """'<|HAPPY|>' -> 'HAPPY'; None (a text-only clip) -> '–'; anything else (e.g. the
    duration slice '<2s') as it is."""
    return "–" if tag is None else tag_name(tag)


def _fmt(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _signed(value) -> str:
    return "no value" if value is None else f"{value:+.4f}"


def _ci(interval) -> str:
    return "" if not interval else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def _p(value: float, resamples: int | None = None) -> str:
    """A p-value; a bootstrap p of 0 only says 'below 1/resamples'."""
    if value == 0 and resamples:
        return f"p<{1 / resamples:.0g}"
    return f"p={value:.3g}"


def significant(delta: dict, metric: str) -> bool:
    return delta.get("p_value", {}).get(metric, 1.0) < 0.05


def _change(delta: dict, metric: str, resamples: int, label: bool = True) -> str:
    return (f"{LABELS[metric] + ' ' if label else ''}Δ {delta[metric]:+.3f} "
            f"{_ci(delta['ci95'][metric])} {_p(delta['p_value'][metric], resamples)}")


def text_judgement(delta: dict) -> tuple[str, list[str], list[str]]:
    """'worse' if any text metric (error rate, CER, WER, empty outputs) is significantly worse,
    else 'better' if any is significantly better, else 'not significantly changed'; with the
    metrics significantly worse and better. One metric never speaks for the others."""
    present = [m for m in TEXT_METRICS if m in delta]
    worse = [m for m in present if delta[m] > 0 and significant(delta, m)]
    better = [m for m in present if delta[m] < 0 and significant(delta, m)]
    word = "worse" if worse else "better" if better else "not significantly changed"
    return word, worse, better


def regressions(report: dict) -> dict[str, list[str]]:
    """{arm: metrics significantly worse than base} over text and emotion metrics."""
    result = {}
    for arm, delta in report.get("deltas", {}).items():
        _, worse, _ = text_judgement(delta)
        worse += [m for m in ("emotion_accuracy", "emotion_ua")
                  if m in delta and delta[m] < 0 and significant(delta, m)]
        result[arm] = worse
    return result


def verdict(report) -> str:
    """What a reader sees first: a line saying what was compared, then one line per arm, then
    the gates. Text is judged on every text metric at once: it is never called better while
    another text metric is significantly worse."""
    return "\n".join(verdict_lines(report))


def verdict_lines(report) -> list[str]:
    base = report["base"]
    if not report.get("deltas"):
        return [f"Base only, {report['n']} clips: error rate {_fmt(base['error_rate'], 3)}, "
                f"emotion accuracy {_fmt(base['emotion_accuracy'], 3)}."]
    resamples = report["bootstrap"]["resamples"]
    lines = [f"Each arm vs base on the same {report['n']} clips (paired; 95% CI):"]
    for arm, delta in report["deltas"].items():
        word, worse, better = text_judgement(delta)
        text = f"text {word.upper() if word == 'worse' else word} (" + "; ".join(
            _change(delta, m, resamples) for m in TEXT_METRICS if m in delta) + ")"
        if worse and better:
            text += (f"; text metrics DISAGREE: {', '.join(LABELS[m] for m in better)} better, "
                     f"{', '.join(LABELS[m] for m in worse)} worse")
        parts = [text]
        for metric in ("emotion_accuracy", "emotion_ua"):
            if metric not in delta:
                continue
            direction = ("better" if delta[metric] > 0 else "WORSE") if delta[metric] != 0 \
                else "unchanged"
            sure = "significant" if significant(delta, metric) else "not significant"
            parts.append(f"{LABELS[metric]} {direction}: "
                         f"{_change(delta, metric, resamples, label=False)} ({sure})")
        if "term_recall" in delta:
            parts.append("terms: " + "; ".join(_change(delta, m, resamples) for m in
                                               ("term_recall", "unbiased_error_rate") if m in delta))
        retention = report.get("retention")
        if retention:
            general = retention["delta"][arm]
            word, _, _ = text_judgement(general)
            parts.append(f"general domain: text {word} (" + "; ".join(
                _change(general, m, resamples) for m in TEXT_METRICS if m in general) + ")")
        lines.append(f"{arm}: " + "; ".join(parts) + ".")
    if report.get("gates"):
        lines.append("Gates: " + ("all passed." if report["gates_passed"] else "FAILED."))
    return lines


DECISION_HEADER = ["arm", "kind", "emotion UA", "emotion acc", "error rate", "general error rate",
                   "training (s, trainable params)", "inference (ms / audio-s)"]


def decision_header(report: dict) -> list[str]:
    """DECISION_HEADER, with term recall and U-error after the error rate when terms were scored."""
    if not report.get("terms"):
        return DECISION_HEADER
    return DECISION_HEADER[:5] + ["term recall", "U-error"] + DECISION_HEADER[5:]


def decision_rows(report: dict) -> list[list[str]]:
    """The decision table: what each arm wins and what it costs."""
    rows = []
    for row in report.get("decision", []):
        untrained = row["kind"] in ("rules", "hotwords") and not row["trainable_parameters"]
        training = "–" if row["kind"] == "base" else f"none ({row['kind']})" if untrained else \
            f"{_fmt(row['train_seconds'], 1)} s, {row['trainable_parameters'] or 0:,}"
        terms = [_fmt(row.get("term_recall"), 3), _fmt(row.get("unbiased_error_rate"), 3)] \
            if report.get("terms") else []
        rows.append([row["arm"], row["kind"] + ("" if row["stage1"] == row["arm"] else f" on {row['stage1']}"),
                     _fmt(row["emotion_ua"], 3), _fmt(row["emotion_accuracy"], 3),
                     _fmt(row["error_rate"], 3), *terms, _fmt(row["general_error_rate"], 3), training,
                     _fmt(row["ms_per_audio_second"], 2)])
    return rows


TERMS_NOTE = ("Terms: occurrences are leftmost-longest matches of a term or alias in the "
              "normalised reference (words for en, characters otherwise); a hit when the "
              "hypothesis units aligned to it spell the term; a false alarm: a hypothesis "
              "occurrence overlapping no hit. B-error: edits on units inside occurrences over "
              "those units; U-error: every other edit over the other units.")


def term_metric_rows(report: dict) -> list[list[str]]:
    """Per arm: each term metric with its 95% interval, and its change against base."""
    rows = []
    for arm in report["arm_names"]:
        metrics, delta = report["arms"][arm], report.get("deltas", {}).get(arm)
        cells = [arm]
        for metric in TERM_METRICS:
            value = f"{_fmt(metrics.get(metric), 3)} {_ci(metrics['ci95'].get(metric))}".strip()
            if delta and metric in delta:
                mark = " *" if significant(delta, metric) else ""
                value += f" (Δ {delta[metric]:+.3f} {_p(delta['p_value'][metric], report['bootstrap']['resamples'])}{mark})"
            cells.append(value)
        rows.append(cells)
    return rows


def per_term_rows(report: dict, limit: int = 30) -> list[list[str]]:
    """The most frequent terms: occurrences, recall per arm, each arm's commonest
    misrecognitions."""
    rows = []
    for entry in report["terms"]["per_term"][:limit]:
        missed = "; ".join(f"{arm}: " + ", ".join(f"{heard} ×{count}" for heard, count in pairs)
                           for arm, pairs in entry["misrecognitions"].items() if pairs)
        rows.append([entry["term"], str(entry["occurrences"]),
                     *(_fmt(entry["recall"].get(arm), 2) for arm in report["arm_names"]), missed or "–"])
    return rows


def terms_section(report: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the domain-term tables; none without --terms."""
    terms = report.get("terms")
    if not terms:
        return []
    absent = terms.get("absent") or []
    note = f"; {len(absent)} never in the references: {', '.join(absent[:10])}" if absent else ""
    return [(f"Domain terms: {terms['file']} ({terms['n_terms']} term(s){note}; 95% intervals, Δ vs base)",
             ["arm"] + [LABELS[m] for m in TERM_METRICS], term_metric_rows(report)),
            ("Per term (most frequent first): recall per arm, misrecognitions",
             ["term", "occurrences", *report["arm_names"], "most common misrecognitions"],
             per_term_rows(report))]


HEADS_HEADER = ["head", "arm", "n", "accuracy", "UA", "macro-F1"]


def head_rows(report: dict) -> list[list[str]]:
    """Each extra head (e.g. role) of each arm that predicts it, with 95% intervals."""
    rows = []
    for head in (report.get("labels") or {}).get("heads", {}):
        for arm in report["arm_names"]:
            scores = report["arms"][arm].get("heads", {}).get(head)
            if scores:
                rows.append([head, arm, str(scores["n"]),
                             *(f"{_fmt(scores[m], 3)} {_ci(scores['ci95'][m])}"
                               for m in ("accuracy", "ua", "macro_f1"))])
    return rows


def new_class_line(report: dict) -> str | None:
    """The recall of each class SenseVoice lacks, per arm (the base's is 0: it cannot say it)."""
    new = [row for row in report.get("decision", []) if row.get("new_class_recall")]
    if not new:
        return None
    tags = list(new[0]["new_class_recall"])
    return "Recall of the classes SenseVoice lacks: " + "; ".join(
        f"{_tag(tag)}: " + ", ".join(f"{row['arm']} {row['new_class_recall'][tag]:.2f}" for row in new)
        for tag in tags)


def headline_rows(report: dict) -> list[list[str]]:
    rows = []
    for arm in report["arm_names"]:
        metrics = report["arms"][arm]
        rows.append([arm] + [f"{_fmt(metrics[m])} {_ci(metrics['ci95'].get(m))}".strip()
                             for m in HEADLINE])
    return rows


def delta_rows(report: dict, key: str = "deltas") -> list[list[str]]:
    rows = []
    for arm, delta in report.get(key, {}).items():
        cells = [arm]
        for metric in HEADLINE:
            if metric in delta:
                mark = " *" if significant(delta, metric) else ""
                cells.append(f"{delta[metric]:+.4f} {_ci(delta['ci95'][metric])} "
                             f"{_p(delta['p_value'][metric], report['bootstrap']['resamples'])}{mark}")
            else:
                cells.append("–")
        mcnemar = delta["emotion_mcnemar"]
        cells.append(f"{mcnemar['only_base_correct']}/{mcnemar['only_other_correct']} "
                     f"p={mcnemar['p_value']:.3g}")
        rows.append(cells)
    return rows


def per_class_rows(report: dict) -> list[list[str]]:
    """emotion, n, then 'precision / recall / F1' for each arm."""
    return [[_tag(tag), str(stats["n"])] +
            [" / ".join(f"{report['arms'][arm]['per_class'][tag][k]:.2f}"
                        for k in ("precision", "recall", "f1")) for arm in report["arm_names"]]
            for tag, stats in report["base"]["per_class"].items()]


def slice_rows(report: dict, table: dict) -> list[list[str]]:
    """slice value, n, then 'error rate / emotion accuracy' for each arm."""
    return [[_tag(str(value)), str(entry["n"])] +
            [f"{_fmt(entry[arm]['error_rate'], 3)} / {_fmt(entry[arm]['emotion_accuracy'], 3)}"
             for arm in report["arm_names"]] for value, entry in table.items()]


RETENTION_HEADER = ["arm", "error rate", "CER", "Δ error rate vs base"]


def retention_rows(retention: dict) -> list[list[str]]:
    """The retention table (Markdown and HTML): each arm's general-domain error rate, CER and
    change against base."""
    return [[arm, _fmt(m["error_rate"]), _fmt(m["cer"]),
             "–" if arm == "base" else f"{retention['delta'][arm]['error_rate']:+.4f} "
             f"{_ci(retention['delta'][arm]['ci95']['error_rate'])}"]
            for arm, m in retention["arms"].items()]


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


TIMING_HEADER = ["arm", "words matched", "start |error| mean / median (ms)",
                 "end |error| mean / median (ms)", "start and end within 100 ms"]
TIMING_NOTE = ("Words are matched in order where the decoded spelling equals the reference's "
               "(normalised); a misrecognised word has no timing error. Times are the decoder's: "
               "rules and cascade arms keep their stage 1's.")


def timing_rows(report) -> list[list[str]]:
    rows = []
    for arm in report["arm_names"]:
        t = report["timing"].get(arm)
        if not t:
            continue
        if not t["matched_words"]:
            rows.append([arm, f"0 of {t['reference_words']}", "–", "–", "–"])
            continue
        rows.append([arm, f"{t['matched_words']} of {t['reference_words']}",
                     f"{t['start_mean_ms']:.0f} / {t['start_median_ms']:.0f}",
                     f"{t['end_mean_ms']:.0f} / {t['end_median_ms']:.0f}", f"{t['within_100ms']:.1%}"])
    return rows


def render_markdown(report: dict) -> str:
    first, *per_arm = verdict_lines(report)
    lines = [f"# A/B report: {report['data']}", "", first, "", *(f"- {line}" for line in per_arm),
             *([""] if per_arm else []),
             f"- base model: `{report['model']}` (model.pt sha256 {report['base_sha256'][:12]}…)"]
    for arm, path in report.get("adapters", {}).items():
        lines.append(f"- {arm}: `{path}`")
    lines += [f"- {report['n']} clips; 95% intervals from {report['bootstrap']['resamples']} "
              "clip-level bootstrap resamples; deltas are paired (same resamples), * = p < 0.05",
              "- text normalised before scoring: rich tags stripped, NFKC (full/half width), lower "
              "case, punctuation removed; CER counts characters (all languages), WER words (en); "
              "error rate is CER for zh/yue/ja/ko clips and WER for en clips", "",
              "## Decision table", "",
              *markdown_table(decision_header(report), decision_rows(report)), "",
              "Inference cost: compute per second of audio on this run's device (stage 1's decoding "
              "plus the arm's post-processing); training: time to the best checkpoint (adapters) or "
              "the whole fit (cascades).", "",
              *([new_class_line(report), ""] if new_class_line(report) else []),
              "## Headline", ""]
    lines += markdown_table(["arm"] + [LABELS[m] for m in HEADLINE], headline_rows(report))
    if head_rows(report):
        lines += ["", "## Extra heads (95% intervals)", ""]
        lines += markdown_table(HEADS_HEADER, head_rows(report))
    for title, header, rows in terms_section(report):
        lines += ["", f"## {title}", "", *markdown_table(header, rows)]
    if report.get("terms"):
        lines += ["", TERMS_NOTE]
    if report.get("timing"):
        lines += ["", "## Word timestamps (against the references' word times)", ""]
        lines += markdown_table(TIMING_HEADER, timing_rows(report))
        lines += ["", TIMING_NOTE]
    if report.get("deltas"):
        lines += ["", "## Change against base", ""]
        lines += markdown_table(["arm"] + [LABELS[m] for m in HEADLINE]
                                + ["McNemar (only base / only arm right)"], delta_rows(report))
    if report.get("deltas_vs_best") and len(report["arm_names"]) > 2:
        lines += ["", f"## Change against the best arm ({report['best_arm']}, by emotion UA)", ""]
        lines += markdown_table(["arm"] + [LABELS[m] for m in HEADLINE]
                                + ["McNemar (only best / only arm right)"],
                                delta_rows(report, "deltas_vs_best"))
    if report.get("gates"):
        lines += ["", "## Gates", ""]
        for arm, checks in report["gates"].items():
            for check in checks:
                lines.append(f"- {arm}: {check['gate']} → {_signed(check['value'])} ({check['metric']}) "
                             f"{'pass' if check['passed'] else 'FAIL'}")
    if report.get("retention"):
        retention = report["retention"]
        lines += ["", f"## Retention: {retention['data']} ({retention['n']} clips)", ""]
        lines += markdown_table(RETENTION_HEADER, retention_rows(retention))
    lines += ["", "## Emotion per class (precision / recall / F1)", ""]
    lines += markdown_table(["emotion", "n"] + report["arm_names"], per_class_rows(report))
    lines += ["", f"Language-ID accuracy: " + ", ".join(
        f"{arm} {report['arms'][arm]['language_accuracy']:.3f}" for arm in report["arm_names"]),
        "Event macro-F1: " + ", ".join(f"{arm} {report['arms'][arm]['event_f1']:.3f}"
                                       for arm in report["arm_names"]), calibration_line(report)]
    for kind, table in report["slices"].items():
        lines += ["", f"## By {kind} (error rate / emotion accuracy)", ""]
        lines += markdown_table([kind, "n"] + report["arm_names"], slice_rows(report, table))
    for arm in report["arm_names"]:
        confusion = report["arms"][arm]["confusion"]
        lines += ["", f"## Confusion matrix, {arm} (rows: reference, columns: predicted)", ""]
        lines += markdown_table([""] + [_tag(c) for c in confusion["columns"]],
                                [[_tag(r)] + [str(c) for c in counts]
                                 for r, counts in zip(confusion["rows"], confusion["counts"])])
    lines += ["", "Per-clip outputs: predictions.jsonl; confusion matrices: confusion*.png; the "
              "most improved and regressed clips: report.html.", ""]
    return "\n".join(lines)


def _plot_matrix(axis, confusion: dict, normalise: bool, title: str) -> None:
    counts = np.array(confusion["counts"], dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    shown = rates if normalise else counts
    axis.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalise else max(1, counts.max()))
    axis.set_xticks(range(len(confusion["columns"])), [_tag(c) for c in confusion["columns"]],
                    rotation=45, ha="right")
    axis.set_yticks(range(len(confusion["rows"])), [_tag(r) for r in confusion["rows"]])
    for (i, j), count in np.ndenumerate(counts):
        text = f"{rates[i, j]:.2f}" if normalise else str(int(count))
        axis.text(j, i, text, ha="center", va="center", fontsize=8,
                  color="white" if rates[i, j] > 0.5 else "black")
    axis.set_title(title)
    axis.set_xlabel("predicted")
    axis.set_ylabel("reference")


def _save(figure, path: Path, **options) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100, **options)


def write_confusion_pngs(report: dict, out_dir: Path) -> dict[str, Path]:
    """confusion.png (row-normalised, all arms) and confusion_<arm>.png (counts | normalised)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    arms = report["arm_names"]
    images = {}
    if not report["arms"]["base"]["confusion"]["rows"]:  # a text-only test set
        return images
    figure = Figure(figsize=(5.5 * len(arms), 4.8))
    axes = figure.subplots(1, len(arms), squeeze=False)
    for axis, arm in zip(axes[0], arms):
        _plot_matrix(axis, report["arms"][arm]["confusion"], True,
                     f"{arm}: emotion accuracy {report['arms'][arm]['emotion_accuracy']:.3f}")
    figure.tight_layout()
    _save(figure, out_dir / "confusion.png")
    images["Confusion: all arms, row-normalised"] = out_dir / "confusion.png"
    for arm in arms:
        figure = Figure(figsize=(11, 4.8))
        axes = figure.subplots(1, 2)
        _plot_matrix(axes[0], report["arms"][arm]["confusion"], False, f"{arm}: counts")
        _plot_matrix(axes[1], report["arms"][arm]["confusion"], True, f"{arm}: row-normalised")
        figure.tight_layout()
        path = out_dir / f"confusion_{arm}.png"
        _save(figure, path)
        images[f"Confusion: {arm}"] = path
    return images


def write_reliability_png(report: dict, out_dir: Path) -> Path | None:
    """reliability.png: per arm, accuracy against the decoded emotion's probability (binned)."""
    figure = reliability_figure(report)
    if figure is None:
        return None
    path = out_dir / "reliability.png"
    _save(figure, path, bbox_inches="tight")  # grown to hold the legend below the axes
    return path


def reliability_figure(report: dict):
    """The reliability diagram (a matplotlib Figure), or None without calibrated arms."""
    arms = [a for a in report["arm_names"] if report["arms"][a].get("calibration")]
    if not arms:
        return None
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 5))
    axis = figure.subplots()
    axis.plot([0, 1], [0, 1], color="#999", linestyle="--", label="perfectly calibrated")
    for arm in arms:
        calibration = report["arms"][arm]["calibration"]
        axis.plot([b["confidence"] for b in calibration["bins"]],
                  [b["accuracy"] for b in calibration["bins"]], marker="o",
                  label=f"{arm} (ECE {calibration['ece']:.3f})")
    axis.set_xlabel("probability of the decoded emotion")
    axis.set_ylabel("share correct")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    # below the axes: inside, it covers the curves it names
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, ncol=2, frameon=False)
    axis.set_title("emotion calibration")
    return figure


def calibration_line(report: dict) -> str:
    parts = [f"{arm} {report['arms'][arm]['calibration']['ece']:.3f} "
             f"({report['arms'][arm]['calibration']['n']} clips)"
             for arm in report["arm_names"] if report["arms"][arm].get("calibration")]
    return ("Emotion calibration, expected calibration error (10 bins; lower is better): "
            + ", ".join(parts)) if parts else ""


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict, images: dict[str, Path]) -> str:
    """A self-contained page: verdict and headline first, then details; PNGs embedded."""
    passed = report.get("gates_passed", True) and not any(regressions(report).values())
    verdict_class = "pass" if passed else "fail"
    sections = [f"<h1>A/B report</h1><p class='meta'>{html.escape(report['data'])} · "
                f"{report['n']} clips · base {html.escape(report['model'])}</p>",
                f"<div class='verdict {verdict_class}'>" + "".join(
                    f"<div class='verdict-line'>{html.escape(line)}</div>"
                    for line in verdict_lines(report)) + "</div>",
                "<h2>Decision table</h2>", _html_table(decision_header(report), decision_rows(report)),
                *([f"<p>{html.escape(new_class_line(report))}</p>"] if new_class_line(report) else []),
                "<h2>Headline (95% bootstrap intervals)</h2>",
                _html_table(["arm"] + [LABELS[m] for m in HEADLINE], headline_rows(report))]
    if head_rows(report):
        sections += ["<h2>Extra heads (95% intervals)</h2>", _html_table(HEADS_HEADER, head_rows(report))]
    for title, header, rows in terms_section(report):
        sections += [f"<h2>{html.escape(title)}</h2>", _html_table(header, rows)]
    if report.get("terms"):
        sections.append(f"<p>{html.escape(TERMS_NOTE)}</p>")
    if report.get("timing"):
        sections += ["<h2>Word timestamps</h2>", _html_table(TIMING_HEADER, timing_rows(report)),
                     f"<p>{html.escape(TIMING_NOTE)}</p>"]
    if report.get("deltas"):
        sections += ["<h2>Change against base (paired; * p &lt; 0.05)</h2>",
                     _html_table(["arm"] + [LABELS[m] for m in HEADLINE] + ["McNemar"],
                                 delta_rows(report))]
    if report.get("deltas_vs_best") and len(report["arm_names"]) > 2:
        sections += [f"<h2>Change against the best arm ({html.escape(report['best_arm'])}, by "
                     "emotion UA; * p &lt; 0.05)</h2>",
                     _html_table(["arm"] + [LABELS[m] for m in HEADLINE] + ["McNemar"],
                                 delta_rows(report, "deltas_vs_best"))]
    if report.get("gates"):
        rows = [[arm, c["gate"], _signed(c["value"]), "pass" if c["passed"] else "FAIL"]
                for arm, checks in report["gates"].items() for c in checks]
        sections += ["<h2>Gates</h2>", _html_table(["arm", "gate", "value", "result"], rows)]
    if report.get("retention"):
        retention = report["retention"]
        sections += [f"<h2>Retention: {html.escape(retention['data'])} ({retention['n']} clips)</h2>",
                     _html_table(RETENTION_HEADER, retention_rows(retention))]
    sections += ["<h2>Emotion per class (precision / recall / F1)</h2>",
                 _html_table(["emotion", "n"] + report["arm_names"], per_class_rows(report))]
    for title, path in images.items():
        data = base64.b64encode(Path(path).read_bytes()).decode()
        sections.append(f"<h3>{html.escape(title)}</h3>"
                        f"<img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>")
    for kind, table in report["slices"].items():
        sections += [f"<h2>By {kind} (error rate / emotion accuracy)</h2>",
                     _html_table([kind, "n"] + report["arm_names"], slice_rows(report, table))]
    for arm, changed in report.get("changed_clips", {}).items():
        for direction in ("improved", "regressed"):
            rows = [[c["key"], c["audio"], c["reference"], _tag(c["reference_emotion"]),
                     f"{_tag(c['base']['emotion'])}: {c['base']['text']}",
                     f"{_tag(c['other']['emotion'])}: {c['other']['text']}"]
                    for c in changed[direction]]
            sections += [f"<h2>Most {direction} clips: {html.escape(arm)}</h2>",
                         _html_table(["key", "audio", "reference", "emotion", "base", arm], rows)
                         if rows else "<p>none</p>"]
    style = ("body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}"
             "table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;"
             "padding:4px 8px;font-size:13px;text-align:left}th{background:#f3f3f3}"
             ".verdict{padding:14px;border-radius:6px;font-size:15px;margin:12px 0}.verdict-line{margin:4px 0}"
             ".pass{background:#e8f5e9;border:1px solid #66bb6a}.fail{background:#ffebee;"
             "border:1px solid #e53935}.meta{color:#666}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>svlora A/B report</title>"
            f"<style>{style}</style></head><body>{''.join(sections)}</body></html>\n")
