"""Texts for capture: the demo corpus, local files, `save_to_disk` folders and hub datasets.

A `DatasetSpec` says where the texts come from and which of them to take. It serialises to a
plain dict, so a run's manifest records exactly which texts the run saw.

    load_texts("demo", max_texts=500)
    load_texts("data/reviews.csv", text_column="review", shuffle=True, seed=1)
    load_texts("hub:roneneldan/TinyStories", split="validation", max_texts=2000)

`iter_windows` / `tokenize_windows` turn texts into token windows, either one truncated window
per text or texts packed back to back into fixed-length windows.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DatasetError, InvalidInputError

SOURCE_KINDS = ("demo", "file", "disk", "hub")
FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".csv", ".tsv", ".parquet")
HUB_PREFIX = "hub:"
DEMO_DEFAULT_TEXTS = 1000  # the demo corpus is endless: texts taken when no max_texts/max_tokens is given


@dataclass
class DatasetSpec:
    """Where texts come from and which of them to take."""

    source: str                     # "demo", a file or folder path, or a hub dataset name
    kind: str = ""                  # demo | file | disk | hub; worked out from `source` when empty
    text_column: str = "text"       # column / key holding the text (json, csv, parquet, disk, hub)
    split: str | None = None        # demo, disk and hub; None -> "train"
    config: str | None = None       # hub dataset config (subset) name
    paragraphs: bool = False        # .txt: blank-line-separated paragraphs instead of one text per line
    max_texts: int | None = None
    max_tokens: int | None = None   # stop once this many tokens were taken (needs a tokenizer)
    shuffle: bool = False
    seed: int = 0                   # shuffling; for the demo corpus, which stories are generated
    shuffle_buffer: int = 100_000   # sources up to this many texts are shuffled exactly
    max_length: int | None = None   # tokens per window (see iter_windows)
    pack: bool = False              # pack texts into fixed max_length windows instead of truncating
    streaming: bool | None = None   # hub only; None -> stream unless HF_HUB_OFFLINE is set

    def __post_init__(self):
        self.source = str(self.source)
        if not self.kind:
            self.kind, self.source = _detect_kind(self.source)
        if self.kind not in SOURCE_KINDS:
            raise InvalidInputError(f"Unknown dataset kind '{self.kind}'; use one of {', '.join(SOURCE_KINDS)}.")
        for name in ("max_texts", "max_tokens", "max_length", "shuffle_buffer"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidInputError(f"{name} must be a positive number (got {value}); leave it unset for no limit.")
        if self.pack and self.max_length is None:
            raise InvalidInputError("Packing needs a window size: set max_length (e.g. 128) or turn packing off.")
        if self.pack and self.max_length < 2:
            raise InvalidInputError("Packed windows need max_length of at least 2 (one BOS plus one token).")

    @classmethod
    def parse(cls, text: str, **overrides: Any) -> DatasetSpec:
        """A spec from a string: demo, path/to/file.jsonl, path/to/folder, hub:org/name, or a hub name."""
        return cls(source=text, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DatasetError(f"Unknown dataset option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        return cls(**data)

    def describe(self) -> str:
        if self.kind == "demo":
            return f"the demo corpus (split {self.split or 'train'})"
        if self.kind == "hub":
            config = f", config {self.config}" if self.config else ""
            return f"hub dataset '{self.source}' ({self.split or 'train'} split{config})"
        return f"'{self.source}'"


def _detect_kind(source: str) -> tuple[str, str]:
    """(kind, source) for a spec string; only an explicit or non-local name means the hub."""
    if source == "demo":
        return "demo", source
    if source.startswith(HUB_PREFIX):
        return "hub", source[len(HUB_PREFIX):]
    path = Path(source).expanduser()
    if path.is_dir():
        return "disk", source
    looks_local = path.suffix.lower() in FILE_SUFFIXES or source.startswith(("/", ".", "~"))
    if path.exists() or looks_local:
        return "file", source  # a missing local file is reported when loading, not sent to the hub
    return "hub", source


def as_spec(spec: DatasetSpec | str | dict, **overrides: Any) -> DatasetSpec:
    """A DatasetSpec from a spec, a spec string or a spec dict, with `overrides` applied."""
    if isinstance(spec, DatasetSpec):
        if "source" in overrides and "kind" not in overrides:
            overrides["kind"] = ""  # a new source needs its kind worked out again
        return dataclasses.replace(spec, **overrides)
    if isinstance(spec, dict):
        return DatasetSpec.from_dict({**spec, **overrides})
    return DatasetSpec.parse(str(spec), **overrides)


# ----- public loading API ----------------------------------------------------------------------


def load_texts(spec: DatasetSpec | str | dict, tokenizer=None, **overrides: Any) -> list[str]:
    """All texts the spec selects, as a list. See `iter_texts` for large sources.

    The demo corpus is endless, so without max_texts / max_tokens it gives DEMO_DEFAULT_TEXTS stories.
    """
    spec = as_spec(spec, **overrides)
    if spec.kind == "demo" and spec.max_texts is None and spec.max_tokens is None:
        spec = dataclasses.replace(spec, max_texts=DEMO_DEFAULT_TEXTS)
    return list(iter_texts(spec, tokenizer=tokenizer))


def iter_texts(spec: DatasetSpec | str | dict, tokenizer=None, **overrides: Any) -> Iterator[str]:
    """Stream the texts the spec selects: non-empty, optionally shuffled, then limited.

    Reads only as much of the source as needed (plus the shuffle buffer when shuffling).
    The demo corpus streams without end unless limited.
    `tokenizer` is needed only for `max_tokens`. Bad options and missing files raise here;
    problems inside a file raise while iterating.
    """
    spec = as_spec(spec, **overrides)
    if spec.max_tokens is not None and tokenizer is None:
        raise DatasetError("max_tokens counts tokens, so it needs a tokenizer: "
                           "pass tokenizer=lm.tokenizer, or use max_texts instead.")
    texts = _non_empty(_read_source(spec), spec)
    # Demo stories are already a seeded random draw (and endless), so shuffling them is a no-op.
    if spec.shuffle and spec.kind != "demo":
        texts = _buffer_shuffle(texts, spec.seed, spec.shuffle_buffer)
    return _require_some(_limit(texts, spec, tokenizer), spec)


def _require_some(texts: Iterator[str], spec: DatasetSpec) -> Iterator[str]:
    count = 0
    for text in texts:
        count += 1
        yield text
    if count == 0:
        raise DatasetError(f"{spec.describe()} contains no texts (it is empty or every text is blank). "
                           "Choose a file or column that holds text.")


def _non_empty(values: Iterable[Any], spec: DatasetSpec) -> Iterator[str]:
    """Skip missing and blank values; anything that is not a string is an error, not silently str()-ed."""
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if not isinstance(value, str):
            raise DatasetError(f"Column '{spec.text_column}' of {spec.describe()} holds {type(value).__name__} "
                               f"values (e.g. {str(value)[:40]!r}), not text. "
                               "Choose a text column with text_column=...")
        if value.strip():
            yield value


def _buffer_shuffle(texts: Iterable[str], seed: int, buffer_size: int) -> Iterator[str]:
    """Shuffle through a buffer: exact for sources up to `buffer_size` texts, approximate beyond,
    so shuffling never needs a whole hub dataset in memory."""
    rng = random.Random(seed)
    buffer: list[str] = []
    for text in texts:
        if len(buffer) < buffer_size:
            buffer.append(text)
            continue
        i = rng.randrange(buffer_size)
        yield buffer[i]
        buffer[i] = text
    rng.shuffle(buffer)
    yield from buffer


def _limit(texts: Iterable[str], spec: DatasetSpec, tokenizer) -> Iterator[str]:
    """Stop after max_texts texts or max_tokens tokens, without reading one text more than needed."""
    if spec.max_texts is None and spec.max_tokens is None:
        yield from texts
        return
    n_texts = n_tokens = 0
    for text in texts:
        yield text
        n_texts += 1
        if spec.max_tokens is not None:
            n = len(tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])
            n_tokens += n if spec.pack or spec.max_length is None else min(n, spec.max_length)
        if (spec.max_texts is not None and n_texts >= spec.max_texts) or (
            spec.max_tokens is not None and n_tokens >= spec.max_tokens
        ):
            return


# ----- sources -----------------------------------------------------------------------------------


def _read_source(spec: DatasetSpec) -> Iterator[Any]:
    if spec.kind == "demo":
        return _read_demo(spec)
    if spec.kind == "hub":
        return _read_hub(spec)
    path = Path(spec.source).expanduser()
    if not path.exists():
        raise DatasetError(f"Dataset file {path} does not exist (relative paths start at {Path.cwd()}). "
                           "Check the path, or write 'hub:<name>' for a hub dataset.")
    if spec.kind == "disk" or path.is_dir():
        return _read_disk(path, spec)
    return _read_file(path, spec)


def _read_demo(spec: DatasetSpec) -> Iterator[str]:
    from .demo.corpus import SPLIT_BUCKETS, iter_stories

    split = spec.split or "train"
    if split not in SPLIT_BUCKETS:
        raise DatasetError(f"The demo corpus has no split '{split}'; use one of {', '.join(SPLIT_BUCKETS)}.")
    for story in iter_stories(split=split, seed=spec.seed):  # endless: the caller limits it
        yield story.text


def _read_file(path: Path, spec: DatasetSpec) -> Iterator[Any]:
    readers = {".txt": _read_txt, ".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv,
               ".tsv": _read_csv, ".parquet": _read_parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DatasetError(f"Cannot read {path}: unsupported file type '{path.suffix}'. "
                           f"Use one of {', '.join(FILE_SUFFIXES)} or a folder saved with datasets.save_to_disk.")
    try:
        yield from reader(path, spec)
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path} is not UTF-8 text ({e.reason}). Re-save it as UTF-8, "
                           f"e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}`.") from None
    except OSError as e:
        raise DatasetError(f"Cannot read {path}: {e.strerror or e}. Check that it is a readable file.") from None
    except csv.Error as e:
        raise DatasetError(f"{path} is not a readable {path.suffix[1:]} file ({e}).") from None


def _read_txt(path: Path, spec: DatasetSpec) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        if not spec.paragraphs:
            for line in f:
                yield line.strip()
            return
        paragraph: list[str] = []
        for line in f:
            if line.strip():
                paragraph.append(line.rstrip("\r\n"))
            elif paragraph:
                yield "\n".join(paragraph).strip()
                paragraph = []
        if paragraph:
            yield "\n".join(paragraph).strip()


def _read_jsonl(path: Path, spec: DatasetSpec) -> Iterator[Any]:
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"Line {line_no} of {path} is not valid JSON ({e.msg}). "
                                   "Each line of a .jsonl file must be one JSON object.") from None
            yield _field(row, spec, f"line {line_no} of {path}")


def _read_json(path: Path, spec: DatasetSpec) -> Iterator[Any]:
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several JSON values: really a JSON-lines file
            yield from _read_jsonl(path, spec)
            return
        raise DatasetError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}).") from None
    if isinstance(data, dict) and isinstance(data.get(spec.text_column), list):
        yield from data[spec.text_column]  # column layout: {"text": [...], ...}
    elif isinstance(data, list):
        for i, row in enumerate(data):
            yield _field(row, spec, f"item {i} of {path}")
    else:
        keys = ", ".join(data) if isinstance(data, dict) else type(data).__name__
        raise DatasetError(f"{path} should hold a list of texts or objects, or {{\"{spec.text_column}\": [...]}}; "
                           f"found {keys}. Choose the key with text_column=...")


def _field(row: Any, spec: DatasetSpec, where: str) -> Any:
    """The text of one JSON row: the row itself if it is a string, else its text_column."""
    if isinstance(row, str) or row is None:
        return row
    if not isinstance(row, dict):
        raise DatasetError(f"{where} is a {type(row).__name__}; "
                           f"expected a string or an object with '{spec.text_column}'.")
    if spec.text_column not in row:
        raise _missing_column(spec, where, list(row))
    return row[spec.text_column]


def _read_csv(path: Path, spec: DatasetSpec) -> Iterator[Any]:
    csv.field_size_limit(2**31 - 1)  # long documents exceed the 128 KiB default
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        if reader.fieldnames is None:
            return  # empty file: reported as "no texts"
        if spec.text_column not in reader.fieldnames:
            raise _missing_column(spec, str(path), reader.fieldnames)
        for row in reader:
            yield row[spec.text_column]


def _read_parquet(path: Path, spec: DatasetSpec) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"{path} is not a readable parquet file ({e}). "
                           "Check that it was written completely.") from None
    if spec.text_column not in file.schema_arrow.names:
        raise _missing_column(spec, str(path), file.schema_arrow.names)
    for batch in file.iter_batches(batch_size=4096, columns=[spec.text_column]):
        yield from batch.column(0).to_pylist()


def _read_disk(path: Path, spec: DatasetSpec) -> Iterator[Any]:
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise DatasetError(f"{path} is a folder but not a dataset saved with datasets.save_to_disk ({e}). "
                           "Pass a file inside it, or a folder that save_to_disk wrote.") from None
    if isinstance(data, datasets.DatasetDict):
        data = data[_pick_split(list(data), spec, str(path))]
    yield from _iter_hf(data, spec, str(path))


def _pick_split(splits: list[str], spec: DatasetSpec, where: str) -> str:
    if spec.split is None and len(splits) == 1:
        return splits[0]
    split = spec.split or "train"
    if split not in splits:
        raise DatasetError(f"{where} has no split '{split}'. Available splits: {', '.join(splits)}; "
                           "choose one with split=...")
    return split


def _iter_hf(data, spec: DatasetSpec, where: str) -> Iterator[Any]:
    """Texts of a `datasets` Dataset or IterableDataset, one column only."""
    columns = data.column_names
    if columns is not None and spec.text_column not in columns:
        raise _missing_column(spec, where, columns)
    for row in data.select_columns([spec.text_column]) if columns is not None else data:
        if spec.text_column not in row:
            raise _missing_column(spec, where, list(row))
        yield row[spec.text_column]


def _read_hub(spec: DatasetSpec) -> Iterator[Any]:
    import datasets

    offline = bool(datasets.config.HF_HUB_OFFLINE)
    # Streaming reads only the rows we take; it needs the network, so offline we use the cache.
    streaming = spec.streaming if spec.streaming is not None else not offline
    try:
        data = datasets.load_dataset(spec.source, spec.config, split=spec.split or "train", streaming=streaming)
        yield from _iter_hf(data, spec, spec.describe())
    except DatasetError:
        raise
    except Exception as e:  # network, auth, not-found and config errors all come as different types
        raise DatasetError(_hub_failure(spec, e, offline)) from None


def _hub_failure(spec: DatasetSpec, error: Exception, offline: bool) -> str:
    cause = f"{type(error).__name__}: {str(error)[:300]}"
    if offline:
        advice = ("HF_HUB_OFFLINE is set, so only datasets already in the local cache can be used: "
                  "unset HF_HUB_OFFLINE and connect once to download it, or pass a local file or save_to_disk folder.")
    else:
        advice = ("Check the name (and config/split) on huggingface.co/datasets, your network connection, "
                  "and for gated datasets your login (`hf auth login`); or pass a local file or save_to_disk folder.")
    return f"Could not load {spec.describe()}: {cause}. {advice}"


def _missing_column(spec: DatasetSpec, where: str, columns: Iterable[str]) -> DatasetError:
    return DatasetError(f"{where} has no column '{spec.text_column}'. Available columns: "
                        f"{', '.join(map(str, columns)) or '(none)'}. Choose one with text_column=...")


# ----- token windows -------------------------------------------------------------------------------


@dataclass
class TokenWindow:
    """One model input, with the origin of every token so activations map back to text."""

    input_ids: list[int]
    doc_index: list[int]  # index (in the texts given) of the text each token came from
    position: list[int]   # index of the token in its text's tokenization; -1 for a BOS added at a window start


def iter_windows(texts: Iterable[str], tokenizer, max_length: int | None = None, pack: bool = False,
                 batch_size: int = 64) -> Iterator[TokenWindow]:
    """Token windows for `texts`, tokenized with the model's special tokens.

    pack=False: one window per text, truncated to max_length (None: whole text).
    pack=True: texts joined with EOS and cut into max_length windows; every window starts with
    BOS (added when the cut falls mid-text) because models treat the first position specially.
    The last window may be shorter.
    """
    if pack and (max_length is None or max_length < 2):
        raise InvalidInputError("Packing needs max_length of at least 2; set max_length (e.g. 128).")
    if max_length is not None and max_length < 1:
        raise InvalidInputError(f"max_length must be positive (got {max_length}).")
    encoded = _encode(texts, tokenizer, None if pack else max_length, batch_size)
    if not pack:
        for doc, ids in encoded:
            yield TokenWindow(ids, [doc] * len(ids), list(range(len(ids))))
        return
    yield from _pack(encoded, tokenizer.bos_token_id, tokenizer.eos_token_id, max_length)


def tokenize_windows(texts: Iterable[str], tokenizer, max_length: int | None = None,
                     pack: bool = False) -> list[TokenWindow]:
    return list(iter_windows(texts, tokenizer, max_length, pack))


def _encode(texts: Iterable[str], tokenizer, max_length: int | None,
            batch_size: int) -> Iterator[tuple[int, list[int]]]:
    """(doc_index, token ids) per text, tokenizing in batches for speed but never all at once."""
    texts = iter(texts)
    doc = 0
    while batch := list(itertools.islice(texts, batch_size)):
        out = tokenizer(batch, add_special_tokens=True, truncation=max_length is not None,
                        max_length=max_length, verbose=False)
        for ids in out["input_ids"]:
            yield doc, list(ids)
            doc += 1


def _pack(encoded: Iterable[tuple[int, list[int]]], bos: int | None, eos: int | None,
          max_length: int) -> Iterator[TokenWindow]:
    ids: list[int] = []
    docs: list[int] = []
    positions: list[int] = []

    def cut(final: bool) -> Iterator[TokenWindow]:
        while ids:
            add_bos = bos is not None and ids[0] != bos
            n = max_length - 1 if add_bos else max_length
            if len(ids) < n and not final:
                return
            window = TokenWindow(ids[:n], docs[:n], positions[:n])
            if add_bos:
                window = TokenWindow([bos, *window.input_ids], [docs[0], *window.doc_index], [-1, *window.position])
            del ids[:n], docs[:n], positions[:n]
            yield window

    for doc, doc_ids in encoded:
        if eos is not None and (not doc_ids or doc_ids[-1] != eos):
            doc_ids = [*doc_ids, eos]  # separates texts, as in pre-training
        ids.extend(doc_ids)
        docs.extend([doc] * len(doc_ids))
        positions.extend(range(len(doc_ids)))
        yield from cut(final=False)
    yield from cut(final=True)
