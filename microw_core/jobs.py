"""Background jobs: long work (capture, training, feature pass) on a thread, its state in the store.

    job_id = start_job(store, "capture", {"model": "demo"}, fn)     # fn(report, should_stop) -> result dict
    cancel_job(store, job_id)
    get_job(store, job_id)["status"]  # queued | running | done | failed | cancelled

The record at jobs/<id>.json is the only state a page needs, so progress survives page switches
and browser reloads. A cancel request is a separate file (jobs/<id>.cancel) so the job's own
progress writes can never overwrite it, and so another process (the CLI) can cancel too.
A record left "running" by a process that has died is reported as failed, never as running forever.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

from .errors import InvalidInputError, JobError, MicrowError, StoreError
from .store import Store, safe_name

KINDS = ("capture", "train", "features", "pipeline")
ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled")
WRITE_EVERY_S = 0.5      # progress writes are throttled: a fast loop must not spend its time on JSON
MAX_HISTORY = 2_000      # metrics points kept; older points are thinned so long runs stay small

Report = Callable[..., None]       # report(progress: float, message: str = "", metrics: dict | None = None, eta_s=None)
ShouldStop = Callable[[], bool]
JobFn = Callable[[Report, ShouldStop], dict | None]

_threads: dict[tuple[str, str], threading.Thread] = {}  # (store root, id) -> thread of this process
_cancel_events: dict[tuple[str, str], threading.Event] = {}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _record_path(job_id: str) -> str:
    return f"jobs/{safe_name(job_id)}.json"


def _cancel_path(job_id: str) -> str:
    return f"jobs/{safe_name(job_id)}.cancel"


class _Job:
    """The running side of one job: throttled record writes and the cancel check."""

    def __init__(self, store: Store, record: dict):
        self.store, self.record = store, record
        self.key = (str(store.root), record["id"])
        self.event = _cancel_events[self.key]
        self.started = time.monotonic()
        self.last_write = 0.0
        self.lock = threading.Lock()

    def write(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_write < WRITE_EVERY_S:
            return
        self.last_write = now
        self.record["updated"] = _now()
        self.store.write_json(_record_path(self.record["id"]), self.record)

    def report(self, progress: float, message: str = "", metrics: dict | None = None,
               eta_s: float | None = None) -> None:
        with self.lock:
            progress = min(max(float(progress), 0.0), 1.0)
            self.record["progress"] = progress
            if message:
                self.record["message"] = message
            if eta_s is None and progress > 0:
                elapsed = time.monotonic() - self.started
                eta_s = elapsed * (1 - progress) / progress
            self.record["eta_s"] = eta_s
            if metrics:
                history = self.record["metrics_history"]
                history.append({k: _plain(v) for k, v in metrics.items()})
                if len(history) > MAX_HISTORY:
                    del history[1:-1:2]  # keep every other point, first and last included
            self.write()

    def should_stop(self) -> bool:
        if self.event.is_set():
            return True
        if self.store.exists(_cancel_path(self.record["id"])):  # set by another process
            self.event.set()
        return self.event.is_set()

    def run(self, fn: JobFn) -> None:
        self.record.update(status="running", started=_now())
        self.write(force=True)
        try:
            result = fn(self.report, self.should_stop)
        except MicrowError as err:
            self._finish("failed", error=str(err))
        except Exception as err:  # an unexpected bug: keep the traceback for the report
            self._finish("failed", error=f"Unexpected error ({type(err).__name__}: {err}). This is a bug in "
                                         "microw; please report it with the traceback saved in the job record.",
                         traceback=traceback.format_exc())
        else:
            status = "cancelled" if self.event.is_set() else "done"
            self._finish(status, result=_plain(result or {}))
        finally:
            _threads.pop(self.key, None)
            _cancel_events.pop(self.key, None)

    def _finish(self, status: str, **fields: Any) -> None:
        with self.lock:
            self.record.update(status=status, eta_s=None, finished=_now(), **fields)
            if status == "done":
                self.record["progress"] = 1.0
            self.write(force=True)
            try:
                self.store._file(_cancel_path(self.record["id"])).unlink(missing_ok=True)
            except (OSError, StoreError):
                pass


def _plain(value: Any) -> Any:
    """JSON-friendly copy: tensors and numpy scalars become numbers, tuples lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # torch / numpy
        return value.tolist()
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def start_job(store: Store, kind: str, params: dict | None, fn: JobFn, job_id: str | None = None) -> str:
    """Run `fn(report, should_stop)` on a thread; returns the job id at once.

    `report(progress 0..1, message, metrics=None, eta_s=None)` updates jobs/<id>.json (throttled);
    `should_stop()` becomes True after `cancel_job`. What `fn` returns is saved as the result.
    """
    if kind not in KINDS:
        raise InvalidInputError(f"Unknown job kind '{kind}'; use one of {', '.join(KINDS)}.")
    job_id = safe_name(job_id or f"{kind}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")
    if store.exists(_record_path(job_id)):
        raise JobError(f"A job '{job_id}' already exists in {store.root}; pick another id.")
    record = {
        "id": job_id, "kind": kind, "status": "queued", "progress": 0.0, "message": "Starting…", "eta_s": None,
        "metrics_history": [], "result": None, "error": None, "params": _plain(params or {}),
        "created": _now(), "updated": _now(), "pid": os.getpid(),
    }
    key = (str(store.root), job_id)
    _cancel_events[key] = threading.Event()
    job = _Job(store, record)
    thread = threading.Thread(target=job.run, args=(fn,), name=f"microw-job-{job_id}", daemon=True)
    _threads[key] = thread  # registered before the record exists, so it is never seen as orphaned
    try:
        store.write_json(_record_path(job_id), record)
    except BaseException:
        _threads.pop(key, None)
        _cancel_events.pop(key, None)
        raise
    thread.start()
    return job_id


def cancel_job(store: Store, job_id: str) -> None:
    """Ask a job to stop; it finishes its current step, saves what it has and ends as 'cancelled'."""
    record = get_job(store, job_id)
    if record["status"] not in ACTIVE:
        return
    store.write_bytes(_cancel_path(job_id), b"")
    event = _cancel_events.get((str(store.root), record["id"]))
    if event is not None:
        event.set()


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _effective(store: Store, record: dict) -> dict:
    """A record as it really stands: 'running' jobs whose thread or process is gone are failed."""
    if record.get("status") not in ACTIVE:
        return record
    pid = record.get("pid")
    here = pid == os.getpid()
    gone = (here and (str(store.root), record["id"]) not in _threads) or (not here and not _alive(pid))
    if gone:
        return {**record, "status": "failed", "error": "The process running this job stopped before it finished "
                "(the app or the command was closed). Start the job again; a capture resumes where it stopped."}
    return record


def get_job(store: Store, job_id: str) -> dict:
    path = _record_path(job_id)
    if not store.exists(path):
        raise JobError(f"There is no job '{job_id}' in {store.root}.")
    return _effective(store, store.read_json(path))


def list_jobs(store: Store, kind: str | None = None) -> list[dict]:
    """Job records, newest first, optionally of one kind; damaged files are skipped."""
    jobs = [_effective(store, j) for j in store.list_jobs() if "status" in j]
    if kind is not None:
        jobs = [j for j in jobs if j.get("kind") == kind]
    return sorted(jobs, key=lambda j: j.get("created", ""), reverse=True)


def wait_job(store: Store, job_id: str, timeout: float | None = None, poll_s: float = 0.1) -> dict:
    """Block until the job has finished (or `timeout` seconds passed); returns its record."""
    deadline = None if timeout is None else time.monotonic() + timeout
    thread = _threads.get((str(store.root), safe_name(job_id)))
    while True:
        if thread is not None:
            thread.join(poll_s)
        record = get_job(store, job_id)
        if record["status"] in FINISHED:
            return record
        if deadline is not None and time.monotonic() > deadline:
            raise JobError(f"Job '{job_id}' is still {record['status']} after {timeout:.0f} s.")
        if thread is None:
            time.sleep(poll_s)
