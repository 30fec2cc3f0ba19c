"""Every page of the app, driven by streamlit's AppTest on a prepared store with real tiny models."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from tiny_models import save_tiny_model

from microw_core import jobs
from microw_core.capture import CaptureConfig, capture
from microw_core.concepts import ConceptDictionary
from microw_core.features import FeatureConfig, compute_features, feature_card
from microw_core.model import load_model
from microw_core.pipeline import DemoBudget, run_demo_pipeline
from microw_core.sae import TrainConfig, load_sae
from microw_core.sae.pipeline import train_sae
from microw_core.store import Store

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 60


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """A tiny model folder, a texts file and a store holding one captured run."""
    root = tmp_path_factory.mktemp("app")
    model_dir = save_tiny_model("llama", root / "tiny-llama")
    texts = root / "texts.jsonl"
    sentences = ["The cat sat on the mat.", "A dog ran to the sea!", "Is the sky blue today?", "We ate 3 red apples."]
    texts.write_text("".join(json.dumps({"text": f"{sentences[i % 4]} Line {i}."}) + "\n" for i in range(240)))
    store = Store(root / "store")
    lm = load_model(str(model_dir))
    capture(lm, str(texts), CaptureConfig(layers=["resid_post.0"], max_tokens=5_000), store, run="base")
    train_sae(store, "base", "resid_post.0", TrainConfig(arch="topk", width=64, k=4, tokens=8_192, batch_size=256),
              name="sae-a")
    compute_features(lm, load_sae(store, "sae-a"), str(texts), store, "sae-a",
                     FeatureConfig(max_tokens=2_000, top_n=5, window=3))
    ConceptDictionary.load(store, "sae-a").set(3, name="cats", description="the word cat", tags=["animal"])
    return {"root": root, "model": str(model_dir), "texts": str(texts), "store": store}


@pytest.fixture
def app(prepared, monkeypatch):
    monkeypatch.setenv("MICROW_STORE", str(prepared["store"].root))
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def load_tiny_model(at: AppTest, model: str) -> AppTest:
    at.switch_page("pages/1_Model.py").run()
    at.radio(key="model_source").set_value("Local folder")
    at.text_input(key="model_name").set_value(model)
    at.button(key="model_load").click().run()
    no_exceptions(at)
    return at


def wait_for_job(store: Store, kind: str, timeout: float = 60, **params) -> dict:
    """The finished job of `kind` whose params include `params`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in jobs.list_jobs(store, kind):
            if params.items() <= record["params"].items() and record["status"] in jobs.FINISHED:
                return record
        time.sleep(0.2)
    raise AssertionError(f"no finished {kind} job with {params} after {timeout} s")


# ----- Home -------------------------------------------------------------------------------------


def test_home_shows_the_store(app, prepared):
    at = app.run()
    no_exceptions(at)
    assert at.title[0].value == "microw"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Activation runs"] == "1"
    assert any("base" in str(df.value) for df in at.dataframe)
    assert at.button[0].label == "Run the demo pipeline"


def test_home_shows_a_running_pipeline_with_progress_and_cancel(prepared, monkeypatch, tmp_path):
    store = Store(tmp_path / "pipeline")
    monkeypatch.setenv("MICROW_STORE", str(store.root))
    budget = DemoBudget(layer="resid_post.0", capture_tokens=10_000_000, width=64, k=4, batch_size=256)
    job_id = jobs.start_job(store, "pipeline", {}, lambda report, should_stop: run_demo_pipeline(
        store, report, should_stop, budget=budget, model=prepared["model"]))
    deadline = time.monotonic() + 60
    while jobs.get_job(store, job_id)["progress"] == 0.0 and time.monotonic() < deadline:
        time.sleep(0.1)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    no_exceptions(at)
    assert at.button(key="cancel-" + job_id)
    assert at.button[0].disabled  # one demo pipeline at a time
    texts = [bar.proto.text for bar in at.get("progress")]
    assert any("Captured" in t and "left" in t for t in texts)  # the job panel: message and ETA
    assert any(t.startswith("pipeline: ") for t in texts)  # the sidebar lists running jobs on every page
    at.button(key="cancel-" + job_id).click().run()
    assert jobs.wait_job(store, job_id, timeout=60)["status"] == "cancelled"
    at.run()
    no_exceptions(at)
    assert any("cancelled" in e.label for e in at.expander)
    assert not at.button[0].disabled


def test_home_with_an_empty_store(prepared, monkeypatch, tmp_path):
    monkeypatch.setenv("MICROW_STORE", str(tmp_path / "empty"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    no_exceptions(at)
    assert any("is empty" in i.value for i in at.info)


# ----- Model ------------------------------------------------------------------------------------


def test_model_page_loads_a_folder_lists_layers_and_generates(app, prepared):
    at = load_tiny_model(app.run(), prepared["model"])
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Layers"] == "2" and metrics["Width (d_model)"] == "32"
    aliases = at.dataframe[0].value
    assert {"embed", "resid_post.0", "resid_post.1", "final_norm"} <= set(aliases["alias"])
    at.text_area(key="gen_prompt").set_value("The cat")
    at.button(key="gen_button").click().run()
    no_exceptions(at)
    assert any('<b>The cat</b>' in m.value for m in at.markdown)


def test_model_page_explains_a_bad_folder(app, tmp_path):
    at = app.run().switch_page("pages/1_Model.py").run()
    at.radio(key="model_source").set_value("Local folder")
    at.text_input(key="model_name").set_value(str(tmp_path / "missing"))
    at.button(key="model_load").click().run()
    no_exceptions(at)
    assert "does not exist" in at.error[0].value


# ----- Activations ------------------------------------------------------------------------------


def test_activations_page_captures_a_file_as_a_job(app, prepared):
    at = load_tiny_model(app.run(), prepared["model"])
    at.switch_page("pages/2_Activations.py").run()
    no_exceptions(at)
    at.radio(key="cap_source").set_value("Local path").run()
    at.text_input(key="cap_path").set_value(prepared["texts"])
    at.multiselect(key="cap_layers").set_value(["resid_post.1"])
    at.number_input(key="cap_tokens").set_value(1_500)
    at.text_input(key="cap_run").set_value("from-file")
    at.button(key="cap_start").click().run()
    no_exceptions(at)
    record = wait_for_job(prepared["store"], "capture", run="from-file")
    assert record["status"] == "done", record.get("error")
    assert record["result"]["tokens"] == 1_500
    at.run()
    assert any("from-file" in str(df.value) for df in at.dataframe)
    assert any("done" in e.label for e in at.expander)


def test_activations_page_saves_uploads_into_the_store(app, prepared):
    at = load_tiny_model(app.run(), prepared["model"])
    at.switch_page("pages/2_Activations.py").run()
    at.radio(key="cap_source").set_value("Upload a file").run()
    at.file_uploader(key="cap_upload").set_value(("notes.txt", b"first line\nsecond line\n", "text/plain")).run()
    no_exceptions(at)
    saved = prepared["store"].root / "uploads" / "notes.txt"
    assert saved.read_bytes() == b"first line\nsecond line\n"


def test_activations_page_explains_an_unreachable_hub_dataset(app, prepared):
    at = load_tiny_model(app.run(), prepared["model"])
    at.switch_page("pages/2_Activations.py").run()
    at.radio(key="cap_source").set_value("Hugging Face dataset").run()
    at.text_input(key="cap_hub").set_value("nobody/no-such-dataset")
    at.text_input(key="cap_run").set_value("from-hub")
    at.button(key="cap_start").click().run()
    record = wait_for_job(prepared["store"], "capture", run="from-hub")
    assert record["status"] == "failed" and "HF_HUB_OFFLINE" in record["error"]  # conftest sets it
    at.run()
    assert any("nobody/no-such-dataset" in e.value for e in at.error)


def test_activations_page_reports_a_failing_capture(app, prepared):
    at = load_tiny_model(app.run(), prepared["model"])
    at.switch_page("pages/2_Activations.py").run()
    at.radio(key="cap_source").set_value("Local path").run()
    at.text_input(key="cap_path").set_value(str(prepared["root"] / "nowhere.jsonl"))
    at.text_input(key="cap_run").set_value("doomed")
    at.button(key="cap_start").click().run()
    record = wait_for_job(prepared["store"], "capture", run="doomed")
    assert record["status"] == "failed" and "does not exist" in record["error"]
    at.run()
    assert any("does not exist" in e.value for e in at.error)
    assert "base" in {r["name"] for r in prepared["store"].list_runs()}  # nothing saved was lost


# ----- Features ---------------------------------------------------------------------------------


def test_features_page_table_card_naming_and_what_fires(app, prepared):
    at = app.run().switch_page("pages/4_Features.py").run()
    no_exceptions(at)
    table = at.dataframe[0].value
    assert {"feature", "concept", "label", "density", "max_activation"} <= set(table.columns)
    assert "cats" in set(table["concept"])
    # open the card of the named feature
    at.number_input(key="feat_id").set_value(3).run()
    no_exceptions(at)
    assert any(m.value.startswith("### Feature 3 — cats") for m in at.markdown)
    highlighted = [m.value for m in at.markdown if 'class="mw-tokens"' in m.value]
    card = feature_card(prepared["store"], "sae-a", 3)
    assert len(highlighted) >= len(card["top_contexts"])
    if card["top_contexts"]:
        assert "title=" in highlighted[0] and "rgba(" in highlighted[0]
    # rename it: the dictionary file changes, nothing else is lost
    at.text_input(key="feat_name_3").set_value("felines")
    at.button(key="feat_save").click().run()
    no_exceptions(at)
    assert ConceptDictionary.load(prepared["store"], "sae-a").get(3).name == "felines"
    assert ConceptDictionary.load(prepared["store"], "sae-a").get(3).description == "the word cat"
    assert any("felines" in s.value for s in at.success)
    # what fires on my text
    at.text_area(key="feat_text").set_value("The cat sat.")
    at.button(key="feat_fires").click().run()
    no_exceptions(at)
    assert at.dataframe[-1].value["token"].tolist()[:3] == ["'T'", "'h'", "'e'"]
    ConceptDictionary.load(prepared["store"], "sae-a").set(3, name="cats")


def test_features_page_computes_cards_as_a_job(app, prepared):
    store = prepared["store"]
    train_sae(store, "base", "resid_post.0", TrainConfig(arch="relu", width=48, tokens=2_048, batch_size=256),
              name="sae-fresh")
    at = app.run().switch_page("pages/4_Features.py").run()
    at.selectbox(key="microw_sae_select").set_value("sae-fresh").run()
    no_exceptions(at)
    assert any("no feature cards yet" in i.value for i in at.info)
    assert at.text_input(key="feat_dataset").value == prepared["texts"]  # the SAE's own data by default
    at.number_input(key="feat_tokens").set_value(1_000)
    at.button(key="feat_compute").click().run()
    no_exceptions(at)
    record = wait_for_job(store, "features", sae="sae-fresh")
    assert record["status"] == "done", record.get("error")
    at.run()
    no_exceptions(at)
    assert len(at.dataframe[0].value) > 0
    store.delete_sae("sae-fresh")


# ----- Concepts ---------------------------------------------------------------------------------


def concepts_page(app) -> AppTest:
    at = app.run().switch_page("pages/5_Concepts.py").run()
    no_exceptions(at)
    return at


def test_concepts_page_edits_searches_and_exports(app, prepared):
    store = prepared["store"]
    at = concepts_page(app)
    assert at.data_editor[0].value["name"].tolist() == ["cats"]
    at.session_state["concepts_editor_sae-a_"] = {
        "edited_rows": {0: {"description": "cat, kitten"}},
        "added_rows": [{"feature": 7, "name": "dogs", "tags": "animal; pet", "confidence": 0.5}],
        "deleted_rows": [],
    }
    at.button(key="concepts_save").click().run()
    no_exceptions(at)
    saved = ConceptDictionary.load(store, "sae-a")
    assert saved.get(3).description == "cat, kitten" and saved.get(3).tags == ["animal"]
    assert saved.get(7).name == "dogs" and saved.get(7).tags == ["animal", "pet"] and saved.get(7).confidence == 0.5
    assert any("2 concept(s) written" in s.value for s in at.success)
    # search
    at.text_input(key="concepts_search").set_value("dog").run()
    assert at.data_editor[0].value["name"].tolist() == ["dogs"]
    # export
    exported = json.loads(ConceptDictionary.load(store, "sae-a").to_json())
    assert {c["name"] for c in exported["concepts"]} == {"cats", "dogs"}
    assert [b.label for b in at.get("download_button")][:2] == ["Download JSON", "Download CSV"]
    # delete a row (while searching): only that feature goes
    at.session_state["concepts_editor_sae-a_dog"] = {"edited_rows": {}, "added_rows": [], "deleted_rows": [0]}
    at.button(key="concepts_save").click().run()
    no_exceptions(at)
    assert [c.feature for c in ConceptDictionary.load(store, "sae-a").entries] == [3]


def test_concepts_page_finds_features_by_token(app, prepared):
    at = concepts_page(app)
    at.text_input(key="concepts_token").set_value("a").run()
    no_exceptions(at)
    expected = ConceptDictionary.load(prepared["store"], "sae-a").search_token("a")
    if expected:
        assert at.dataframe[-1].value["feature"].tolist() == [m.feature for m in expected]
    else:
        assert any("No feature peaks" in c.value for c in at.caption)


def test_concepts_page_rejects_bad_rows_without_losing_anything(app, prepared):
    store = prepared["store"]
    before = ConceptDictionary.load(store, "sae-a").to_json()
    at = concepts_page(app)
    at.session_state["concepts_editor_sae-a_"] = {"edited_rows": {0: {"name": ""}}, "added_rows": [], "deleted_rows": []}
    at.button(key="concepts_save").click().run()
    no_exceptions(at)
    assert "needs a feature id and a name" in at.error[0].value
    assert ConceptDictionary.load(store, "sae-a").to_json() == before


def test_concepts_page_imports_csv(app, prepared):
    store = prepared["store"]
    at = concepts_page(app)
    csv = b"feature,name,tags\n5,waves,sea\n"
    at.file_uploader(key="concepts_upload").set_value(("c.csv", csv, "text/csv")).run()
    at.button(key="concepts_import").click().run()
    no_exceptions(at)
    assert ConceptDictionary.load(store, "sae-a").get(5).name == "waves"
    assert ConceptDictionary.load(store, "sae-a").get(3).name == "cats"  # kept
    bad = b"feature,name\n99999,too far\n"
    at.file_uploader(key="concepts_upload").set_value(("bad.csv", bad, "text/csv")).run()
    at.button(key="concepts_import").click().run()
    assert "does not exist" in at.error[0].value
    ConceptDictionary.load(store, "sae-a").remove(5)


# ----- Steering ---------------------------------------------------------------------------------


def test_steering_page_steers_a_named_concept(app, prepared):
    at = app.run().switch_page("pages/6_Steering.py").run()
    no_exceptions(at)
    assert at.multiselect(key="steer_concepts").options == ["cats (#3)"]
    at.multiselect(key="steer_concepts").set_value(["cats (#3)"]).run()
    at.text_input(key="steer_ids").set_value("5").run()
    assert [s.label for s in at.slider] == ["cats (#3)", "feature #5"]
    at.slider[0].set_value(4.0)
    at.text_area(key="steer_prompt").set_value("The dog")
    at.number_input(key="steer_tokens").set_value(12)
    at.button(key="steer_go").click().run()
    no_exceptions(at)
    result = at.session_state["steer_result"]
    assert set(result["activations"]) == {3, 5}
    assert len(result["activations"][3]) == len(result["tokens"]["steered"])
    continuations = [m.value for m in at.markdown if 'class="mw-gen"' in m.value]
    assert len(continuations) >= 2 and all("<b>" in c for c in continuations)
    assert any(c.get("type") == "plotly_chart" for c in [{"type": e.type} for e in at.get("plotly_chart")])


def test_steering_page_needs_a_feature(app):
    at = app.run().switch_page("pages/6_Steering.py").run()
    at.button(key="steer_go").click().run()
    no_exceptions(at)
    assert "Choose at least one concept" in at.error[0].value


# ----- Train SAE --------------------------------------------------------------------------------


def test_train_page_trains_with_live_curves_and_lists_saes(app, prepared):
    store = prepared["store"]
    at = load_tiny_model(app.run(), prepared["model"])
    at.switch_page("pages/3_Train_SAE.py").run()
    no_exceptions(at)
    at.selectbox(key="train_run").set_value("base").run()
    assert any("sae-a" in str(df.value) for df in at.dataframe)  # existing SAEs with metrics
    at.selectbox(key="train_expansion").set_value(2)
    at.number_input(key="train_k").set_value(4)
    at.number_input(key="train_tokens").set_value(8_192)
    at.selectbox(key="train_batch").set_value(256).run()
    name_box = next(t for t in at.text_input if t.key and t.key.startswith("train_name_"))
    name_box.set_value("sae-ui")
    at.button(key="train_start").click().run()
    no_exceptions(at)
    record = wait_for_job(store, "train", name="sae-ui")
    assert record["status"] == "done", record.get("error")
    history = record["metrics_history"]
    assert history and {"loss", "explained_variance", "l0"} <= set(history[-1])
    assert "ce_loss_recovered" in record["result"]["metrics"]  # evaluated with the model
    at.run()
    no_exceptions(at)
    assert any("sae-ui" in str(df.value) for df in at.dataframe)
    assert at.get("plotly_chart")  # curves and the EV / L0 plot
    # deleting needs a confirmation
    at.selectbox(key="train_curves").set_value("sae-ui").run()
    assert at.button(key="train_delete").disabled
    at.checkbox(key="train_delete_sure").check().run()
    at.button(key="train_delete").click().run()
    no_exceptions(at)
    assert "sae-ui" not in {s["name"] for s in store.list_saes()}
