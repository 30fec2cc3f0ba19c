import threading
import time

import pytest

from microw_core import jobs
from microw_core.errors import DatasetError, InvalidInputError, JobError
from microw_core.store import Store


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store")


def test_job_reports_progress_metrics_and_result(store):
    def fn(report, should_stop):
        for step in range(5):
            report((step + 1) / 5, f"step {step + 1}", metrics={"step": step, "loss": 1.0 / (step + 1)})
        return {"answer": 42}

    job_id = jobs.start_job(store, "train", {"lr": 0.1}, fn)
    record = jobs.wait_job(store, job_id, timeout=10)
    assert record["status"] == "done"
    assert record["progress"] == 1.0
    assert record["result"] == {"answer": 42}
    assert record["params"] == {"lr": 0.1}
    assert [m["step"] for m in record["metrics_history"]] == [0, 1, 2, 3, 4]
    assert record["error"] is None
    # the record is in the store, readable by any page
    assert store.read_json(f"jobs/{job_id}.json")["status"] == "done"
    assert [j["id"] for j in jobs.list_jobs(store, kind="train")] == [job_id]
    assert jobs.list_jobs(store, kind="capture") == []


def test_cancel_stops_the_job_and_keeps_its_result(store):
    started = threading.Event()

    def fn(report, should_stop):
        started.set()
        steps = 0
        while not should_stop():
            steps += 1
            report(0.1, "working")
            time.sleep(0.01)
        return {"steps": steps}

    job_id = jobs.start_job(store, "capture", {}, fn)
    started.wait(5)
    assert jobs.get_job(store, job_id)["status"] == "running"
    jobs.cancel_job(store, job_id)
    record = jobs.wait_job(store, job_id, timeout=10)
    assert record["status"] == "cancelled"
    assert record["result"]["steps"] >= 1
    assert not store.exists(f"jobs/{job_id}.cancel")  # cleaned up
    jobs.cancel_job(store, job_id)  # cancelling a finished job is harmless


def test_cancel_from_another_process_via_the_store(store):
    """A cancel file written by someone else (CLI, another server) is seen by should_stop."""
    def fn(report, should_stop):
        deadline = time.monotonic() + 10
        while not should_stop() and time.monotonic() < deadline:
            time.sleep(0.01)
        return {}

    job_id = jobs.start_job(store, "features", {}, fn)
    store.write_bytes(f"jobs/{job_id}.cancel", b"")
    assert jobs.wait_job(store, job_id, timeout=10)["status"] == "cancelled"


def test_errors_are_recorded_as_failed(store):
    def user_error(report, should_stop):
        raise DatasetError("The file is empty. Pick another file.")

    def bug(report, should_stop):
        return 1 / 0

    failed = jobs.wait_job(store, jobs.start_job(store, "capture", {}, user_error), timeout=10)
    assert failed["status"] == "failed"
    assert failed["error"] == "The file is empty. Pick another file."
    crashed = jobs.wait_job(store, jobs.start_job(store, "capture", {}, bug), timeout=10)
    assert crashed["status"] == "failed"
    assert "ZeroDivisionError" in crashed["error"] and "ZeroDivisionError" in crashed["traceback"]


def test_orphaned_running_job_is_reported_failed(store):
    """A record left 'running' by a process that died must not look alive forever."""
    store.write_json("jobs/old.json", {"id": "old", "kind": "capture", "status": "running", "progress": 0.3,
                                       "pid": 2**22 + 12345, "created": "2020-01-01T00:00:00+00:00"})
    record = jobs.get_job(store, "old")
    assert record["status"] == "failed"
    assert "Start the job again" in record["error"]


def test_progress_writes_are_throttled_and_history_is_bounded(store, monkeypatch):
    monkeypatch.setattr(jobs, "MAX_HISTORY", 100)

    def fn(report, should_stop):
        for i in range(1000):
            report(i / 1000, metrics={"step": i})
        return {}

    record = jobs.wait_job(store, jobs.start_job(store, "train", {}, fn), timeout=20)
    history = record["metrics_history"]
    assert len(history) <= 100
    assert history[0]["step"] == 0 and history[-1]["step"] == 999


def test_bad_kind_and_unknown_job(store):
    with pytest.raises(InvalidInputError, match="Unknown job kind"):
        jobs.start_job(store, "bake", {}, lambda r, s: {})
    with pytest.raises(JobError, match="no job"):
        jobs.get_job(store, "nope")
