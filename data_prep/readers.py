"""Read the user's inputs into raw rows: csv, jsonl, an <emotion>/<clip> folder, a Kaldi data
dir, or an existing SenseVoice manifest. Text files may be UTF-8 (with or without BOM, CRLF)
or any encoding named by --encoding (e.g. gb18030); a decoding failure names the line."""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from svlora.data_prep.spreadsheet import REJECTED_MARKER, from_spreadsheet_safe
from svlora.errors import ManifestError
from svlora.manifest import iter_json_objects

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".opus"}
FIELDS = ("audio", "text", "emotion", "language", "event", "speaker")


@dataclass
class InputRow:
    """One clip as the user described it, before validation. `where` names file:line."""

    where: str
    audio: Path
    text: str | None
    emotion: str | None
    language: str | None = None
    event: str | None = None
    speaker: str | None = None
    itn: str | None = None
    key: str | None = None  # the input's own clip id, when it has one (Kaldi, manifests)
    no_text_reason: str | None = None  # why a reader found no transcript, for the report
    problem: str | None = None  # a row the reader could not use (e.g. an empty audio cell)
    extra: dict = field(default_factory=dict, repr=False)  # other columns (a schema's heads)

    def as_fields(self) -> dict:
        """The row as csv fields (what rejected.csv holds, ready to fix and re-run)."""
        # absolute, so OUT/rejected.csv re-runs from its own folder
        audio = "" if self.problem and str(self.audio) in ("", ".") else str(self.audio.resolve())
        return {"audio": audio, "text": self.text or "", "emotion": self.emotion or "",
                "language": self.language or "", "event": self.event or "",
                "speaker": self.speaker or "", **{k: v or "" for k, v in self.extra.items()}}


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """A text file's contents with a leading BOM removed; a bad byte names its line."""
    data = path.read_bytes()
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise ManifestError(f"{path}:{line}: cannot decode as {encoding} ({error.reason}); pass "
                            "--encoding (e.g. gb18030 for spreadsheets saved on Chinese Windows)") from None
    except LookupError:
        raise ManifestError(f"--encoding {encoding!r}: unknown encoding") from None
    return text.lstrip("\ufeff")


def clean(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def resolve_audio(value: str, base_dir: Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base_dir / path


def row_from_fields(fields: dict, where: str, base_dir: Path) -> InputRow:
    audio = clean(fields.get("audio", fields.get("file_name")))  # file_name: HF audiofolder
    values = {name: clean(fields.get(name)) for name in FIELDS[1:]}
    extra = {name: clean(value) for name, value in fields.items()
             if name not in (*FIELDS, "file_name", *REJECTED_MARKER) and isinstance(name, str)
             and (value is None or isinstance(value, (str, int, float)))}
    if audio is None:  # this row is rejected with its own line; the others go on
        return InputRow(where=where, audio=Path(""), **values, extra=extra,
                        problem="empty audio cell (the clip's path is required)")
    return InputRow(where=where, audio=resolve_audio(audio, base_dir), **values, extra=extra)


def read_csv(path: Path, encoding: str = "utf-8") -> tuple[list[InputRow], set[str]]:
    """Rows of a CSV with a header (audio, text, emotion[, language, event, speaker])."""
    reader = csv.DictReader(io.StringIO(read_text(path, encoding), newline=""))
    columns = {c.strip() for c in (reader.fieldnames or []) if c}
    if "file_name" in columns:  # a Hugging Face audiofolder's metadata.csv
        columns.add("audio")
    if "audio" not in columns:
        raise ManifestError(f"{path}:1: header has no 'audio' (or 'file_name') column (found: "
                            f"{', '.join(sorted(columns)) or 'nothing'})")
    # a rejected.csv svlora wrote (its reason and row columns) re-runs with the original text;
    # any other CSV's cells are read exactly as written
    unquote = from_spreadsheet_safe if REJECTED_MARKER <= columns else (lambda cell: cell)
    rows = [row_from_fields({k.strip(): unquote(v) if isinstance(v, str) else v
                             for k, v in record.items() if k}, f"{path}:{number}", path.parent)
            for number, record in enumerate(reader, start=2)]
    return rows, columns


def read_jsonl(path: Path, encoding: str = "utf-8") -> tuple[list[InputRow], set[str]]:
    """Rows of a JSON-lines file with the same fields as the CSV format."""
    rows, columns = [], set()
    for where, record in iter_json_objects(path, read_text(path, encoding)):
        columns |= record.keys()
        rows.append(row_from_fields(record, where, path.parent))
    return rows, columns


NUMBERED_LINE = re.compile(r"^\s*(\d+)\s*(?:[.、:：]|\t)\s*(\S.*?)\s*$")
TRANSCRIPT_ENCODINGS = ("utf-8", "gb18030")  # tried in order when --encoding is left at utf-8


def parse_transcript_line(line: str) -> tuple[str, str] | None:
    """(id, text) of one transcript line: `id<TAB>text[<TAB>...]` (ESD), numbered sentence
    lists `201. text`, `201、text`, `201: text` (CASIA's copies), or `id text` (Kaldi)."""
    if not line.strip():
        return None
    numbered = NUMBERED_LINE.match(line)
    if numbered:
        return numbered.group(1), numbered.group(2).split("\t")[0].strip()
    parts = line.split("\t") if "\t" in line else line.split(maxsplit=1)
    if len(parts) >= 2 and parts[1].strip():
        return parts[0].strip(), parts[1].strip()
    return None


def read_transcripts(path: Path, encoding: str = "utf-8") -> dict[str, str]:
    """{id: text} from a transcript file (see parse_transcript_line). With the default UTF-8,
    a file that is not UTF-8 is tried as GB18030 (Chinese corpora) before giving up."""
    candidates = TRANSCRIPT_ENCODINGS if encoding.lower() in ("utf-8", "utf8") else (encoding,)
    for attempt, codec in enumerate(candidates):
        try:
            text = read_text(path, codec)
            break
        except ManifestError:
            if attempt == len(candidates) - 1:
                raise
    return dict(pair for line in text.splitlines() if (pair := parse_transcript_line(line)))


def single_text_file(root: Path) -> Path | None:
    """The one .txt in a corpus root (its sentence list), if there is exactly one."""
    candidates = sorted(p for p in root.glob("*.txt") if p.is_file())
    return candidates[0] if len(candidates) == 1 else None


def real_dir(path: Path) -> bool:
    """A directory that is not a symlink. Readers never follow symlinked directories: a link
    such as `angry -> .` would relabel the whole tree and make the real copies duplicates."""
    return path.is_dir() and not path.is_symlink()


def subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if real_dir(p))


def audio_files(folder: Path) -> list[Path]:
    """Audio files anywhere under folder, sorted; symlinked files are read, symlinked
    directories are not entered (linked_dirs lists them for the report)."""
    # os.walk lists a symlinked directory among the directories and, without followlinks,
    # does not enter it: the names it gives as files are never directories
    return sorted(Path(parent) / name for parent, _, names in os.walk(folder)
                  for name in names if Path(name).suffix.lower() in AUDIO_EXTENSIONS)


def linked_dirs(root: Path) -> list[str]:
    """One warning per symlinked directory under root, none of which the readers enter."""
    return [f"{Path(parent) / name}: symlinked directory (-> {os.readlink(Path(parent) / name)}) "
            "not followed; to include its clips, pass the real folder or copy them in"
            for parent, names, _ in os.walk(root) for name in sorted(names)
            if (Path(parent) / name).is_symlink()]


def read_folder(root: Path, transcripts_file: Path | None,
                encoding: str = "utf-8") -> tuple[list[InputRow], set[str]]:
    """`root/<emotion>/<clip>`; transcripts from `transcripts_file` or a single top-level .txt."""
    transcripts_file = transcripts_file or single_text_file(root)
    transcripts = read_transcripts(transcripts_file, encoding) if transcripts_file else {}
    rows = [InputRow(where=str(clip), audio=clip, text=transcripts.get(clip.stem),
                     emotion=emotion_dir.name)
            for emotion_dir in subdirs(root) for clip in audio_files(emotion_dir)]
    if not rows:
        raise ManifestError(f"{root}: no audio files under <emotion>/ folders "
                            f"(extensions {', '.join(sorted(AUDIO_EXTENSIONS))})")
    return rows, {"audio", "emotion"} | ({"text"} if transcripts else set())


def read_kaldi_table(path: Path, encoding: str) -> dict[str, tuple[str, str]]:
    """{utterance id: (value, 'file:line')} of a Kaldi `id value...` file."""
    table = {}
    for number, line in enumerate(read_text(path, encoding).splitlines(), start=1):
        if line.strip():
            parts = line.strip().split(maxsplit=1)
            table[parts[0]] = (parts[1] if len(parts) > 1 else "", f"{path}:{number}")
    return table


def read_kaldi(root: Path, encoding: str = "utf-8",
               needs_emotion: bool = True) -> tuple[list[InputRow], set[str]]:
    """A Kaldi data dir: wav.scp (plain paths), text, utt2emo (unless a text-only corpus);
    optional utt2spk, utt2lang."""
    for required in ("wav.scp", "text", "utt2emo") if needs_emotion else ("wav.scp", "text"):
        if not (root / required).is_file():
            extra = (" (one emotion label per utterance: `utt_id label`; or --no-emotion for a "
                     "text-only corpus)") if required == "utt2emo" else ""
            raise ManifestError(f"{root}: Kaldi data dir has no {required}{extra}")
    tables = {name: read_kaldi_table(root / name, encoding) if (root / name).is_file() else {}
              for name in ("wav.scp", "text", "utt2spk", "utt2emo", "utt2lang")}
    rows = []
    for utterance, (location, where) in tables["wav.scp"].items():
        if location.rstrip().endswith("|") or location.lstrip().startswith("-"):
            raise ManifestError(f"{where}: {utterance} is a piped command ({location!r}); svlora "
                                "reads audio files only: extract the audio to files first, "
                                "e.g. with `wav-copy scp:wav.scp ark,scp:out.ark,out.scp` or sox")
        value = lambda name: tables[name].get(utterance, ("", ""))[0] or None  # noqa: E731
        rows.append(InputRow(where=where, audio=resolve_audio(location.strip(), root),
                             text=value("text"), emotion=value("utt2emo"),
                             language=value("utt2lang"), speaker=value("utt2spk"), key=utterance))
    columns = {"audio", "text"} | ({"emotion"} if tables["utt2emo"] else set()) | \
        ({"speaker"} if tables["utt2spk"] else set()) | ({"language"} if tables["utt2lang"] else set())
    return rows, columns


def read_sensevoice_jsonl(path: Path, encoding: str = "utf-8") -> tuple[list[InputRow], set[str]]:
    """An existing FunASR SenseVoice manifest (relative sources resolve against its folder)."""
    rows = []
    for where, record in iter_json_objects(path, read_text(path, encoding)):
        if "source" not in record:
            raise ManifestError(f"{where}: no 'source' field; is this a SenseVoice manifest?")
        rows.append(InputRow(
            where=where, audio=resolve_audio(str(record["source"]), path.parent),
            text=clean(record.get("target")), emotion=clean(record.get("emo_target")),
            language=(clean(record.get("text_language")) or "").strip("<|>") or None,
            event=clean(record.get("event_target")), speaker=clean(record.get("speaker")),
            itn=(clean(record.get("with_or_wo_itn")) or "").strip("<|>") or None,
            key=clean(record.get("key")),
            extra={k: clean(v) for k, v in (record.get("heads") or {}).items()}))
    columns = {"audio", "text", "emotion", "language", "event"} | \
        ({"speaker"} if any(r.speaker for r in rows) else set())
    return rows, columns
