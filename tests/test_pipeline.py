"""The one-click demo pipeline and the job functions behind the app's long-running work."""

import pytest
from tiny_models import save_tiny_model

from microw_core import jobs
from microw_core.features import feature_card, load_feature_table
from microw_core.pipeline import DemoBudget, run_demo_pipeline
from microw_core.store import Store

SMALL = DemoBudget(layer="resid_post.0", capture_tokens=6_000, train_tokens=8_192, width=64, k=4, batch_size=256,
                   feature_tokens=2_000)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(save_tiny_model("llama", tmp_path_factory.mktemp("model") / "tiny"))


def test_demo_pipeline_captures_trains_and_computes_cards(tmp_path, tiny):
    store = Store(tmp_path / "store")
    reports = []
    result = run_demo_pipeline(store, lambda p, m="", metrics=None, eta_s=None: reports.append((p, m, metrics)),
                               budget=SMALL, model=tiny)
    assert result["tokens"] == 6_000
    assert [r["name"] for r in store.list_runs()] == [result["run"]]
    (sae,) = store.list_saes()
    assert sae["name"] == result["sae"] and sae["metrics"]["explained_variance"] == result["metrics"]["explained_variance"]
    assert len(load_feature_table(store, result["sae"])) == 64
    assert feature_card(store, result["sae"], 0)["id"] == 0
    progress = [p for p, _, _ in reports]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert any(m and "loss" in m for _, _, m in reports)  # live training metrics reach the report
    assert set(result["seconds"]) == {"capture", "train", "features", "total"}


def test_demo_pipeline_as_a_job_can_be_cancelled(tmp_path, tiny):
    store = Store(tmp_path / "store")
    job_id = jobs.start_job(store, "pipeline", {}, lambda report, should_stop: run_demo_pipeline(
        store, report, should_stop, budget=DemoBudget(**{**SMALL.__dict__, "capture_tokens": 10_000_000}), model=tiny))
    while jobs.get_job(store, job_id)["progress"] == 0.0:
        pass
    jobs.cancel_job(store, job_id)
    record = jobs.wait_job(store, job_id, timeout=60)
    assert record["status"] == "cancelled"
    assert store.list_saes() == []  # stopped during capture: nothing trained
    (run,) = store.list_runs()
    assert run["complete"] is False and run["tokens"] > 0  # the captured part is kept (resumable)
