"""`--format hf`: a Hugging Face `datasets` dataset saved with save_to_disk. (A local
`audiofolder`, audio files + metadata.csv, is read with --format csv on its metadata.csv.)

Audio is read undecoded (datasets' decoding needs torchcodec); clips stored inside the dataset
are written once to OUT/audio/ so the manifests can point at files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from svlora.data_prep.readers import InputRow, clean
from svlora.errors import ManifestError


@dataclass
class HfColumns:
    audio: str = "audio"
    text: str = "text"
    emotion: str = "emotion"
    speaker: str = "speaker"
    language: str = "language"
    split: str | None = None  # which split of a DatasetDict (required when it has several)


def require_datasets():
    try:
        import datasets
    except ImportError:
        raise ManifestError("--format hf needs the datasets library: pip install 'svlora[hf]'") from None
    return datasets


def load_dataset_dir(path: Path, split: str | None):
    datasets = require_datasets()
    if not any((path / name).is_file() for name in ("dataset_info.json", "dataset_dict.json",
                                                     "state.json")):
        hint = (" For an audiofolder, run --format csv on its metadata.csv."
                if (path / "metadata.csv").is_file() else "")
        raise ManifestError(f"{path}: not a dataset saved with save_to_disk.{hint}")
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split is None and len(loaded) > 1:
            raise ManifestError(f"{path}: the dataset has splits {', '.join(loaded)}; choose one "
                                "with --hf-split")
        loaded = loaded[split or next(iter(loaded))]
    return loaded


def read_hf(path: Path, audio_out: Path, columns: HfColumns) -> tuple[list[InputRow], set[str]]:
    datasets = require_datasets()

    dataset = load_dataset_dir(path, columns.split)
    if columns.audio not in dataset.column_names:
        raise ManifestError(f"{path}: no audio column {columns.audio!r} (columns: "
                            f"{', '.join(dataset.column_names)}); pass --audio-column")
    if isinstance(dataset.features[columns.audio], datasets.Audio):
        dataset = dataset.cast_column(columns.audio, datasets.Audio(decode=False))
    present = {name: column for name, column in (
        ("text", columns.text), ("emotion", columns.emotion), ("speaker", columns.speaker),
        ("language", columns.language)) if column in dataset.column_names}
    rows = []
    for index, record in enumerate(dataset):
        where = f"{path}[{index}]"
        audio = record[columns.audio]
        rows.append(InputRow(where=where, audio=audio_file(audio, index, audio_out, where),
                             **{name: clean(record.get(column)) for name, column in present.items()}))
    return rows, {"audio", *present}


def audio_file(audio, index: int, audio_out: Path, where: str) -> Path:
    """A path for the row's audio: its own file, or its embedded bytes written to audio_out."""
    if isinstance(audio, str):
        return Path(audio)
    if not isinstance(audio, dict):
        raise ManifestError(f"{where}: audio column holds {type(audio).__name__}, expected a path "
                            "or an Audio feature")
    data, name = audio.get("bytes"), audio.get("path") or f"clip{index}.wav"
    if data is None:
        return Path(name)
    target = audio_out / f"{index:06d}_{Path(name).name}"
    if not target.is_file() or target.read_bytes() != data:
        from svlora.io import atomic_path
        with atomic_path(target) as temporary:
            temporary.write_bytes(data)
    return target
