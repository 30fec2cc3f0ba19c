"""The on-disk store: activation runs, SAEs and jobs under one folder.

Layout (see docs/API):
    runs/<run>/manifest.json, runs/<run>/shards/*.safetensors, runs/<run>/texts.jsonl
    saes/<name>/config.json, sae.safetensors, metrics.json, ...
    jobs/<id>.json

Every write is atomic (temp file in the same folder, fsync, os.replace), so a crash or a full
disk leaves either the old file or the new one, never half of one. Tensor files get a sha256
recorded by the caller (FileRecord) and checked on read, so silent damage becomes a clear
StoreCorruptError instead of wrong numbers. Only safetensors, JSON and parquet: never pickle.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors

from .errors import StoreCorruptError, StoreError

DEFAULT_ROOT = "microw_store"
MAX_NAME_LENGTH = 100
_UNSAFE = re.compile(r"(?:[^A-Za-z0-9._-]|\.{2,})+")  # unsafe characters and ".." runs


def safe_name(name: str) -> str:
    """Make `name` a single safe path component: [A-Za-z0-9._-], no leading dot, no "..".

    Unsafe characters (including "/" and "\\") become "_", so a name can never point outside
    its folder. Raises StoreError when nothing usable is left.
    """
    cleaned = _UNSAFE.sub("_", str(name)).lstrip(".")[:MAX_NAME_LENGTH]
    if not cleaned.strip("_"):
        raise StoreError(
            f"'{name}' cannot be used as a store name: use letters, digits, '.', '_' or '-' (for example 'my_run')."
        )
    return cleaned


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
    torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}


def safetensors_chunks(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> list:
    """The safetensors encoding of `tensors` as [header, raw bytes of each tensor] (CPU tensors)."""
    header: dict[str, Any] = {"__metadata__": {k: str(v) for k, v in metadata.items()}} if metadata else {}
    views, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _SAFETENSORS_DTYPES:
            raise StoreError(f"Cannot store tensor '{name}' of dtype {t.dtype} in a safetensors file.")
        view = t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b""
        header[name] = {"dtype": _SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(view)]}
        views.append(view)
        offset += len(view)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    return [len(encoded).to_bytes(8, "little") + encoded, *views]


@dataclass(frozen=True)
class FileRecord:
    """A written file: its path relative to the store root, checksum and size."""

    path: str
    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileRecord:
        return cls(path=data["path"], sha256=data["sha256"], bytes=int(data["bytes"]))


def _fix_hint(relpath: str) -> str:
    """What the user should do about a damaged file, by where it lives."""
    parts = relpath.split("/")
    if parts[0] == "runs" and len(parts) > 1:
        return f"Delete the run '{parts[1]}' (Store.delete_run or the Store page) and run the capture again."
    if parts[0] == "saes" and len(parts) > 1:
        return f"Delete the SAE '{parts[1]}' (Store.delete_sae or the Store page) and train it again."
    if parts[0] == "jobs":
        return "Delete this job file; the job's results may need to be produced again."
    return "Delete the file and produce it again."


class Store:
    """A folder holding runs, SAEs and jobs. Folders are created only when something is written."""

    def __init__(self, root: str | os.PathLike | None = None):
        root = root if root is not None else os.environ.get("MICROW_STORE") or DEFAULT_ROOT
        # Resolved once, so later changes of the working directory do not move the store.
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"Store('{self.root}')"

    # ----- paths -------------------------------------------------------------------------

    def path(self, *parts: str) -> Path:
        """root / parts, each part sanitised; raises StoreError if the result leaves the root."""
        path = self.root.joinpath(*(safe_name(p) for p in parts))
        # Sanitised parts cannot contain ".." or "/", but a symlink inside the store could still
        # point outside; resolving catches that.
        if not path.resolve().is_relative_to(self.root):
            raise StoreError(f"'{'/'.join(parts)}' points outside the store {self.root}; use a plain name.")
        return path

    def _file(self, relpath: str) -> Path:
        """A "/"-separated path relative to the root. Absolute paths and ".." are refused."""
        if relpath.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", relpath):
            raise StoreError(f"'{relpath}' is an absolute path; store paths are relative to {self.root}.")
        parts = [p for p in relpath.replace("\\", "/").split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            raise StoreError(f"'{relpath}' is not a valid store path; use e.g. 'runs/<name>/manifest.json'.")
        return self.path(*parts)

    def relpath(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def exists(self, relpath: str) -> bool:
        return self._file(relpath).exists()

    # ----- raw bytes -----------------------------------------------------------------------

    def write_bytes(self, relpath: str, data: bytes) -> FileRecord:
        """Atomically write `data`: readers see the old file or the new one, never a mix."""
        return self.write_chunks(relpath, [data])

    def write_chunks(self, relpath: str, chunks) -> FileRecord:
        """`write_bytes` for data given as a sequence of buffers, hashed and written without joining them."""
        path = self._file(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    digest.update(chunk)
                    size += f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        return FileRecord(path=self.relpath(path), sha256=digest.hexdigest(), bytes=size)

    def read_bytes(self, relpath: str, sha256: str | None = None) -> bytes:
        """Read a file, verifying its checksum when one was recorded."""
        path = self._file(relpath)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            if sha256 is not None:  # recorded in a manifest, so it should be there
                raise self._corrupt(path, "the file is missing") from None
            raise StoreError(f"{path} does not exist in the store {self.root}.") from None
        except OSError as e:
            raise StoreError(f"Cannot read {path}: {e.strerror or e}. Check the file's permissions.") from e
        if sha256 is not None and sha256_bytes(data) != sha256:
            raise self._corrupt(path, "its checksum does not match the one recorded when it was written")
        return data

    def _corrupt(self, path: Path, reason: str) -> StoreCorruptError:
        return StoreCorruptError(f"The store file {path} is damaged: {reason}. {_fix_hint(self.relpath(path))}")

    # ----- JSON / JSONL ------------------------------------------------------------------

    def write_json(self, relpath: str, obj: Any) -> FileRecord:
        return self.write_bytes(relpath, json.dumps(obj, indent=2).encode("utf-8"))

    def read_json(self, relpath: str, sha256: str | None = None) -> Any:
        data = self.read_bytes(relpath, sha256)
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._corrupt(self._file(relpath), f"it is not valid JSON ({e})") from None

    def write_jsonl(self, relpath: str, rows: list[Any]) -> FileRecord:
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        return self.write_bytes(relpath, text.encode("utf-8"))

    def read_jsonl(self, relpath: str, sha256: str | None = None) -> list[Any]:
        data = self.read_bytes(relpath, sha256)
        try:
            return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._corrupt(self._file(relpath), f"it is not valid JSON lines ({e})") from None

    # ----- tensors -------------------------------------------------------------------------

    def write_tensors(
        self, relpath: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
    ) -> FileRecord:
        """A safetensors file, written straight from the tensors' memory (no serialised copy)."""
        return self.write_chunks(relpath, safetensors_chunks(tensors, metadata))

    def read_tensors(self, relpath: str, sha256: str | None = None) -> dict[str, torch.Tensor]:
        data = self.read_bytes(relpath, sha256)
        try:
            return load_safetensors(data)
        except Exception as e:  # safetensors raises its own error types for truncated/garbled files
            raise self._corrupt(self._file(relpath), f"it is not a readable safetensors file ({e})") from None

    # ----- tables (parquet) ----------------------------------------------------------------

    def write_table(self, relpath: str, df) -> FileRecord:
        buffer = io.BytesIO()
        df.to_parquet(buffer, engine="pyarrow", index=False)
        return self.write_bytes(relpath, buffer.getvalue())

    def read_table(self, relpath: str, sha256: str | None = None):
        import pandas as pd

        data = self.read_bytes(relpath, sha256)
        try:
            return pd.read_parquet(io.BytesIO(data), engine="pyarrow")
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError for damaged files
            raise self._corrupt(self._file(relpath), f"it is not a readable parquet table ({e})") from None

    # ----- runs, SAEs, jobs ------------------------------------------------------------------

    def list_runs(self) -> list[dict]:
        """One dict per run: its manifest plus `name`, `bytes`; damaged runs get an `error` entry."""
        return [self._run_summary(d) for d in self._children("runs")]

    def list_saes(self) -> list[dict]:
        """One dict per SAE: `name`, `bytes`, `config`, `metrics` (or None); damaged SAEs get `error`."""
        return [self._sae_summary(d) for d in self._children("saes")]

    def list_jobs(self) -> list[dict]:
        """One dict per job file (its contents plus `id`); damaged files get `error`."""
        folder = self.root / "jobs"
        if not folder.is_dir():
            return []
        out = []
        for f in sorted(folder.glob("*.json")):
            try:
                out.append({**self.read_json(f"jobs/{f.name}"), "id": f.stem})
            except StoreError as e:
                out.append({"id": f.stem, "error": str(e)})
        return out

    def inspect_run(self, name: str, verify: bool = False) -> dict:
        """A run's summary; with verify=True every recorded shard is checked against its sha256.

        Problems are listed under `problems` rather than raised, so a page can show them all.
        """
        folder = self._item("runs", name)
        info = self._run_summary(folder)
        info["problems"] = [info["error"]] if "error" in info else []
        if verify and "error" not in info:
            for shard in info.get("shards", []):
                for record in shard.get("files", {}).values():
                    try:
                        self.read_bytes(record["path"], record["sha256"])
                    except StoreError as e:
                        info["problems"].append(str(e))
        return info

    def inspect_sae(self, name: str) -> dict:
        return self._sae_summary(self._item("saes", name))

    def read_job(self, job_id: str) -> dict:
        return self.read_json(f"jobs/{safe_name(job_id)}.json")

    def delete_run(self, name: str) -> None:
        _remove(self._item("runs", name))

    def delete_sae(self, name: str) -> None:
        _remove(self._item("saes", name))

    def delete_job(self, job_id: str) -> None:
        path = self.path("jobs", f"{safe_name(job_id)}.json")
        if not path.exists():
            raise StoreError(f"There is no job '{job_id}' in the store {self.root}.")
        path.unlink()

    # ----- helpers -----------------------------------------------------------------------------

    def _children(self, kind: str) -> list[Path]:
        folder = self.root / kind
        if not folder.is_dir():
            return []
        return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))

    def _item(self, kind: str, name: str) -> Path:
        path = self.path(kind, name)
        if not path.is_dir():
            names = [d.name for d in self._children(kind)]
            known = f" Known: {', '.join(names)}." if names else ""
            raise StoreError(f"There is no {kind[:-1]} '{name}' in the store {self.root}.{known}")
        return path

    def _sae_summary(self, folder: Path) -> dict:
        item = {"name": folder.name, "bytes": _size(folder), "config": None, "metrics": None}
        try:
            item["config"] = self.read_json(f"saes/{folder.name}/config.json")
            if (folder / "metrics.json").exists():
                item["metrics"] = self.read_json(f"saes/{folder.name}/metrics.json")
        except StoreError as e:
            item["error"] = str(e)
        return item

    def _run_summary(self, folder: Path) -> dict:
        item: dict[str, Any] = {"name": folder.name, "bytes": _size(folder)}
        manifest = folder / "manifest.json"
        if not manifest.exists():
            return {**item, "complete": False, "error": f"{manifest} is missing (an interrupted capture?)."}
        try:
            return {**self.read_json(self.relpath(manifest)), **item}
        except StoreError as e:
            return {**item, "complete": False, "error": str(e)}


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def _remove(path: Path) -> None:
    # A symlinked item is unlinked, never followed: deleting must not reach outside the store.
    if path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); Windows cannot open folders, which is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
