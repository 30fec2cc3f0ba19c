"""Activation capture: one forward pass records any number of layers into store shards.

Only real tokens are stored: padding never, BOS and other special tokens only when asked. Each
row keeps its token id, document index and position, so it maps back to its text. Shards are
flushed as they fill (memory stays flat) by a writer thread (disk work overlaps the model), and
the manifest is updated after each shard, so a killed capture resumes where its last shard ended.
"""

from __future__ import annotations

import inspect
import itertools
import queue
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable, Iterator

import numpy as np
import torch

from .datasets import DatasetSpec, TokenWindow, as_spec, iter_texts, iter_windows
from .errors import InvalidInputError, StoreError
from .hooks import Detector, HookContext, StopForward
from .layers import layer_aliases, resolve_layer
from .model import LanguageModel
from .store import Store, safe_name

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEMO_DEFAULT_TOKENS = 200_000  # the demo corpus is endless


@dataclass
class CaptureConfig:
    layers: list[str]
    max_tokens: int | None = None     # stored tokens; None = the whole dataset
    batch_size: int = 32
    max_length: int = 256             # tokens per text (longer texts are truncated, or packed with pack=True)
    pack: bool = False
    dtype: str = "float32"            # storage dtype
    keep_special: bool = False        # also store BOS / EOS / other special-token positions (flagged)
    shard_tokens: int = 16_384        # rows per shard: 64 MiB per layer at d=1024 in float32; smaller shards
                                      # keep memory low for wide models and leave less to write after the last batch
    early_stop: bool = True           # skip blocks after the deepest captured layer
    sort_window: int = 64             # batches sorted by length together, to cut padding

    def __post_init__(self):
        self.layers = list(dict.fromkeys(self.layers))  # a list (as in the manifest), each layer once
        if not self.layers:
            raise InvalidInputError("Name at least one layer to capture, e.g. resid_post.2 (see `microw layers`).")
        if self.dtype not in STORAGE_DTYPES:
            raise InvalidInputError(f"Unknown storage dtype '{self.dtype}'; use one of {', '.join(STORAGE_DTYPES)}.")
        for name in ("batch_size", "max_length", "shard_tokens"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be a positive number.")


@dataclass
class CaptureProgress:
    tokens: int
    total: int | None
    tokens_per_s: float
    eta_s: float | None


# ----- hooks -----------------------------------------------------------------------------------


class _RowCollector(Detector):
    """Keeps the activation rows selected by `keep` (set per batch) in the storage dtype."""

    def __init__(self, layer: str, dtype: torch.dtype):
        super().__init__(layer)
        self.dtype = dtype
        self.keep: torch.Tensor | None = None
        self.rows: torch.Tensor | None = None

    def observe(self, ctx: HookContext, activation: torch.Tensor) -> None:
        self.rows = activation[self.keep].to("cpu", self.dtype)


class _Stop(Detector):
    def observe(self, ctx: HookContext, activation: torch.Tensor) -> None:
        raise StopForward


def _stop_point(model, layers: list[str]) -> str | None:
    """The hook point after which no captured layer is left to compute (None: a layer outside the blocks).

    A layer inside block i (attn_out.i, mlp_out.i, a dotted submodule) stops at the block's output,
    so the order of submodules inside a block never matters.
    """
    aliases = layer_aliases(model)
    blocks = [ref.module_name for alias, ref in aliases.items() if alias.startswith("resid_post.")]
    points = []
    for name in layers:
        ref = resolve_layer(model, name)
        if ref.name == "embed":
            points.append((-1.0, name))
        elif ref.name == "final_norm":
            points.append((float(len(blocks)), name))
        elif ref.pre and ref.name.startswith("resid_pre."):
            points.append((blocks.index(ref.module_name) - 0.5, name))
        else:
            inside = [i for i, b in enumerate(blocks) if ref.module_name == b or ref.module_name.startswith(b + ".")]
            if not inside:  # a module outside the blocks (e.g. lm_head): no early stop
                return None
            points.append((float(inside[0]), f"resid_post.{inside[0]}"))
    return max(points)[1]


def _hooks_only_options(model, logits_read: bool) -> dict:
    """Forward options for a pass read only through its hooks: no KV cache, and, unless a hooked module
    sees the logits, logits for the last position alone (the unembedding is a large share of a small
    model's forward, e.g. 11% of the demo's)."""
    params = inspect.signature(model.forward).parameters
    options = {"use_cache": False} if "use_cache" in params else {}
    if not logits_read and "logits_to_keep" in params:
        options["logits_to_keep"] = 1
    return options


# ----- the capture ---------------------------------------------------------------------------


def _sorted_batches(windows: Iterator[TokenWindow], batch_size: int, sort_window: int,
                    resume: tuple[int, int]) -> Iterator[tuple[tuple[int, int], list[TokenWindow]]]:
    """Batches of similar length: each chunk of `sort_window` batches is sorted by length.

    Yields ((chunk, batch) position after this batch, batch); `resume` is such a position, so a
    resumed capture skips exactly the batches already stored.
    """
    chunk_size = batch_size * sort_window
    first_chunk, first_batch = resume
    windows = itertools.islice(windows, first_chunk * chunk_size, None)
    for c in itertools.count(first_chunk):
        chunk = list(itertools.islice(windows, chunk_size))
        if not chunk:
            return
        chunk.sort(key=lambda w: len(w.input_ids))
        batches = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        for b in range(first_batch if c == first_chunk else 0, len(batches)):
            yield (c, b + 1), batches[b]


class _TextLog:
    """Texts pulled from the dataset so far; each shard stores the ones not stored yet."""

    def __init__(self, texts: Iterator[str], already_written: int):
        self._texts, self.written, self.pending = texts, already_written, {}
        self._count = 0

    def __iter__(self):
        for text in self._texts:
            if self._count >= self.written:
                self.pending[self._count] = text
            self._count += 1
            yield text

    def take(self) -> list[list]:
        rows = [[i, t] for i, t in sorted(self.pending.items())]
        self.written += len(rows)
        self.pending.clear()
        return rows


class _ShardWriter:
    """Writes shards on a background thread, then records them in the manifest (in order)."""

    def __init__(self, store: Store, run: str, manifest: dict):
        self.store, self.run, self.manifest = store, run, manifest
        self.queue: queue.Queue = queue.Queue(maxsize=2)  # bounded: memory stays flat
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def put(self, shard: dict) -> None:
        if self.error:
            raise self.error
        self.queue.put(shard)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error:
            raise self.error

    def _loop(self) -> None:
        while (shard := self.queue.get()) is not None:
            if self.error:
                continue
            try:
                self._write(shard)
            except BaseException as err:  # re-raised on the capture thread
                self.error = err

    def _write(self, shard: dict) -> None:
        index = len(self.manifest["shards"])
        base = f"runs/{self.run}/shards/{index:05d}"
        files = {}
        for layer in list(shard["layers"]):  # one layer's rows joined at a time, off the capture thread
            rows = torch.cat(shard["layers"].pop(layer))
            files[layer] = self.store.write_tensors(f"{base}.{safe_name(layer)}.safetensors",
                                                    {"activations": rows}).to_dict()
        meta = {k: torch.cat(v) for k, v in shard["meta"].items()}
        files["meta"] = self.store.write_tensors(f"{base}.meta.safetensors", meta).to_dict()
        files["texts"] = self.store.write_jsonl(f"{base}.texts.jsonl", shard["texts"]).to_dict()
        tokens = len(meta["token_ids"])
        self.manifest["shards"].append({"index": index, "tokens": tokens, "files": files})
        self.manifest["tokens"] += tokens
        self.manifest["resume"] = shard["resume"]
        self.manifest["texts_written"] = shard["texts_written"]
        self.store.write_json(f"runs/{self.run}/manifest.json", self.manifest)


def _new_manifest(lm: LanguageModel, spec: DatasetSpec, config: CaptureConfig, run: str) -> dict:
    return {
        "name": run, "model": lm.name, "dataset": spec.to_dict(), "layers": list(config.layers),
        "d_model": {}, "dtype": config.dtype, "tokens": 0, "complete": False, "shards": [],
        "resume": [0, 0], "texts_written": 0, "config": asdict(config),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _open_or_resume(store: Store, lm: LanguageModel, spec: DatasetSpec, config: CaptureConfig, run: str) -> dict:
    path = f"runs/{run}/manifest.json"
    if not store.exists(path):
        return _new_manifest(lm, spec, config, run)
    manifest = store.read_json(path)
    if manifest.get("complete"):
        raise StoreError(f"Run '{run}' already exists and is complete; pick another --run name or delete it first.")
    same = (manifest["model"], manifest["dataset"], manifest["config"]) == (lm.name, spec.to_dict(), asdict(config))
    if not same:
        raise StoreError(f"Run '{run}' exists (interrupted) with other settings; resume it with the same model, "
                         "dataset and options, or pick another --run name.")
    return manifest


def capture(
    lm: LanguageModel,
    dataset: DatasetSpec | str | dict,
    config: CaptureConfig,
    store: Store,
    run: str | None = None,
    progress: Callable[[CaptureProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Capture `config.layers` over `dataset` into run `run` (resumed if interrupted). Returns a summary."""
    spec = as_spec(dataset)
    if spec.kind == "demo" and config.max_tokens is None and spec.max_texts is None:
        config = replace(config, max_tokens=DEMO_DEFAULT_TOKENS)  # the caller's config stays as given
    run = safe_name(run or datetime.now().strftime("run-%Y%m%d-%H%M%S"))
    for layer in config.layers:
        resolve_layer(lm.model, layer)  # unknown names fail before any work
    manifest = _open_or_resume(store, lm, spec, config, run)
    storage = STORAGE_DTYPES[config.dtype]
    collectors = [_RowCollector(layer, storage) for layer in config.layers]
    hooks: list[Detector] = list(collectors)
    stop = _stop_point(lm.model, config.layers)
    options = _hooks_only_options(lm.model, logits_read=stop is None)
    if stop is not None and config.early_stop:
        hooks.append(_Stop(stop))
    special = torch.tensor(sorted(lm.special_token_ids), dtype=torch.long, device=lm.device)

    texts = _TextLog(iter_texts(spec), manifest["texts_written"])
    windows = iter_windows(texts, lm.tokenizer, max_length=config.max_length, pack=config.pack)
    writer = _ShardWriter(store, run, manifest)
    total = config.max_tokens
    done, position = manifest["tokens"], tuple(manifest["resume"])
    buffer: dict[str, list[torch.Tensor]] = {layer: [] for layer in config.layers}
    meta: dict[str, list[torch.Tensor]] = {k: [] for k in ("token_ids", "doc_index", "position", "special")}
    buffered = 0
    start, start_tokens = time.perf_counter(), done

    def flush() -> None:
        nonlocal buffered
        if not buffered:
            return
        writer.put({
            "layers": {layer: list(rows) for layer, rows in buffer.items()},
            "meta": {k: list(v) for k, v in meta.items()},
            "texts": texts.take(), "resume": list(position), "texts_written": texts.written,
        })
        for rows in (*buffer.values(), *meta.values()):
            rows.clear()
        buffered = 0

    try:
        with lm.hooks(*hooks), torch.no_grad():
            for next_position, batch in _sorted_batches(windows, config.batch_size, config.sort_window, position):
                if total is not None and done >= total or (should_stop and should_stop()):
                    break
                ids, mask, docs, positions = _pad(batch, lm.tokenizer.pad_token_id)
                is_special = torch.isin(ids, special.cpu())
                keep = mask.bool() if config.keep_special else mask.bool() & ~is_special
                if total is not None and done + int(keep.sum()) > total:
                    keep = _first_n(keep, total - done)  # stop exactly at max_tokens
                device_keep = keep.to(lm.device)
                for collector in collectors:
                    collector.keep, collector.rows = device_keep, None
                try:
                    lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), **options)
                except StopForward:
                    pass
                for collector in collectors:
                    if collector.rows is None:
                        raise InvalidInputError(f"Layer '{collector.layer}' was not run by the model's forward pass, "
                                                "so it has no activations; choose another layer (see `microw layers`).")
                    buffer[collector.layer].append(collector.rows)
                    manifest["d_model"][collector.layer] = collector.rows.shape[-1]
                meta["token_ids"].append(ids[keep])
                meta["doc_index"].append(docs[keep])
                meta["position"].append(positions[keep])
                meta["special"].append(is_special[keep])
                n = int(keep.sum())
                done, buffered, position = done + n, buffered + n, next_position
                if buffered >= config.shard_tokens:
                    flush()
                if progress:
                    rate = (done - start_tokens) / max(time.perf_counter() - start, 1e-9)
                    eta = (total - done) / rate if total and rate > 0 else None
                    progress(CaptureProgress(done, total, rate, eta))
        flush()
    finally:
        writer.close()
    seconds = time.perf_counter() - start
    stopped = bool(should_stop and should_stop())
    manifest["complete"] = not stopped
    manifest["seconds"] = manifest.get("seconds", 0.0) + seconds
    if manifest["tokens"] == 0:
        raise InvalidInputError(f"No tokens were captured from {spec.describe()}: every text was empty or special tokens only.")
    store.write_json(f"runs/{run}/manifest.json", manifest)
    return {
        "run": run, "tokens": manifest["tokens"], "layers": list(config.layers),
        "tokens_per_s": (done - start_tokens) / max(seconds, 1e-9),
        "bytes": sum(r["bytes"] for s in manifest["shards"] for r in s["files"].values()),
        "complete": manifest["complete"],
    }


def _pad(batch: list[TokenWindow], pad_id: int):
    """Right-padded ids, mask, doc indices and positions [batch, longest]; doc and position are -1 on padding."""
    lengths = torch.tensor([len(w.input_ids) for w in batch])
    mask = torch.arange(int(lengths.max())) < lengths[:, None]
    total = int(lengths.sum())

    def fill(name: str, padding: int) -> torch.Tensor:
        # One flat array scattered through the mask (row-major, the order of the concatenation):
        # a tensor per row costs a noticeable share of a small model's forward.
        flat = np.fromiter(itertools.chain.from_iterable(getattr(w, name) for w in batch), np.int64, total)
        out = torch.full(mask.shape, padding, dtype=torch.long)
        out[mask] = torch.from_numpy(flat)
        return out

    return fill("input_ids", pad_id), mask.long(), fill("doc_index", -1), fill("position", -1)


def _first_n(keep: torch.Tensor, n: int) -> torch.Tensor:
    """`keep` with only its first n True entries (row-major order) left True."""
    flat = keep.flatten()
    cut = flat & (torch.cumsum(flat.long(), 0) <= n)
    return cut.view_as(keep)


# ----- reading a run back ------------------------------------------------------------------------


@dataclass
class ActivationRun:
    store: Store
    name: str
    manifest: dict = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return self.manifest["layers"]

    @property
    def tokens(self) -> int:
        return self.manifest["tokens"]

    @property
    def model(self) -> str:
        return self.manifest["model"]

    def d_model(self, layer: str) -> int:
        self._check_layer(layer)
        return self.manifest["d_model"][layer]

    def _check_layer(self, layer: str) -> None:
        if layer not in self.layers:
            raise StoreError(f"Run '{self.name}' has no layer '{layer}'; it holds {', '.join(self.layers)}.")

    def _read(self, record: dict) -> dict[str, torch.Tensor]:
        return self.store.read_tensors(record["path"], record["sha256"])

    def iter_shards(self, layer: str) -> Iterator[torch.Tensor]:
        """Each shard's activations as float32 [n, d], checksums verified."""
        self._check_layer(layer)
        for shard in self.manifest["shards"]:
            yield self._read(shard["files"][layer])["activations"].float()

    def load(self, layer: str, max_tokens: int | None = None) -> torch.Tensor:
        parts, n = [], 0
        for rows in self.iter_shards(layer):
            parts.append(rows)
            n += len(rows)
            if max_tokens is not None and n >= max_tokens:
                break
        return torch.cat(parts)[:max_tokens]

    def meta(self) -> dict[str, torch.Tensor]:
        shards = [self._read(s["files"]["meta"]) for s in self.manifest["shards"]]
        return {k: torch.cat([s[k] for s in shards]) for k in shards[0]}

    def texts(self) -> list[str]:
        rows = [row for s in self.manifest["shards"]
                for row in self.store.read_jsonl(s["files"]["texts"]["path"], s["files"]["texts"]["sha256"])]
        return [text for _, text in sorted(rows)]


def open_run(store: Store, name: str) -> ActivationRun:
    name = safe_name(name)
    path = f"runs/{name}/manifest.json"
    if not store.exists(path):
        known = [r["name"] for r in store.list_runs()]
        raise StoreError(f"There is no run '{name}' in {store.root}" +
                         (f"; known runs: {', '.join(known)}." if known else "; capture one with `microw capture`."))
    return ActivationRun(store, name, store.read_json(path))
