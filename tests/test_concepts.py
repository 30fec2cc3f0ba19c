"""The concept dictionary (edits, search, import/export, concurrent editors) and ground-truth evaluation."""

import json
import threading

import pytest
import torch

from microw_core.cli import main as cli_main
from microw_core.concepts import (
    ConceptDictionary, LabelledTokens, best_f1_dense, best_f1_sparse, evaluate_concepts, labelled_tokens, probe_f1,
)
from microw_core.demo.corpus import CONCEPTS, generate_stories
from microw_core.errors import InvalidInputError, StoreError
from microw_core.features import FeatureConfig, compute_features
from microw_core.sae import SAEConfig, build_sae, save_sae
from microw_core.store import Store
from tiny_models import save_tiny_model, tiny_model

WIDTH = 16


def make_sae(model: str = "tiny") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_sae(SAEConfig(arch="topk", d_in=32, width=WIDTH, k=3, layer="resid_post.0", model=model)).eval()


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "store")
    save_sae(store, "s", make_sae())
    return store


# ----- dictionary --------------------------------------------------------------------------------------


def test_set_get_remove_and_field_merge(store):
    d = ConceptDictionary.load(store, "s")
    assert d.entries == []
    c = d.set(3, name="  beach words ", tags="ocean; sea, sand", confidence=0.5)
    assert (c.feature, c.name, c.tags, c.confidence) == (3, "beach words", ["ocean", "sea", "sand"], 0.5)
    assert c.updated
    d.set(3, description="fires on beach, shore, waves")  # other fields keep their values
    c = ConceptDictionary.load(store, "s").get(3)
    assert (c.name, c.description, c.confidence) == ("beach words", "fires on beach, shore, waves", 0.5)
    d.set(7, name="colours")
    assert [c.feature for c in d.entries] == [3, 7]
    d.remove(3)
    assert [c.feature for c in ConceptDictionary.load(store, "s").entries] == [7]
    with pytest.raises(InvalidInputError, match="has no concept"):
        d.remove(3)


@pytest.mark.parametrize("bad,match", [
    (dict(feature=1, name=""), "name"),
    (dict(feature=1, name="x", confidence=1.5), "confidence"),
    (dict(feature=1, name="x", confidence="high"), "confidence"),
    (dict(feature=WIDTH, name="x"), "does not exist"),
    (dict(feature=-1, name="x"), "does not exist"),
    (dict(feature="two", name="x"), "whole number"),
    (dict(feature=1, name="x", colour="red"), "Unknown concept field"),
    (dict(feature=1, name="x", tags=[1, 2]), "tags"),
])
def test_invalid_edits(store, bad, match):
    d = ConceptDictionary.load(store, "s")
    feature = bad.pop("feature")
    with pytest.raises(InvalidInputError, match=match):
        d.set(feature, **bad)
    assert ConceptDictionary.load(store, "s").entries == []


def test_unknown_sae(tmp_path):
    with pytest.raises(StoreError, match="no SAE"):
        ConceptDictionary.load(Store(tmp_path), "missing")


def test_search_by_name_tag_description(store):
    d = ConceptDictionary.load(store, "s")
    d.set(1, name="ocean", tags=["topic"])
    d.set(2, name="ocean waves", description="sea")
    d.set(3, name="colours", tags=["word class", "ocean-adjacent"])
    d.set(4, name="forest", description="trees near the ocean")
    assert [c.feature for c in d.search("OCEAN")] == [1, 2, 3, 4]  # exact name, name, tag, description
    assert [c.feature for c in d.search("word")] == [3]
    assert d.search("nothing") == []
    assert len(d.search("")) == 4


def _filled(d: ConceptDictionary) -> None:
    d.set(0, name="quotes", description='text in "double quotes", with commas', tags=["structure", "punct"],
          confidence=0.25)
    d.set(5, name="multi\nline", description="line one\nline two", tags=[], confidence=1.0)
    d.set(15, name="ünïcode ☂", description="", tags=["a b"], confidence=0.125)


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_round_trip(store, tmp_path, fmt):
    d = ConceptDictionary.load(store, "s")
    _filled(d)
    text = d.to_json() if fmt == "json" else d.to_csv()
    save_sae(store, "t", make_sae())
    other = ConceptDictionary.load(store, "t")
    assert (other.from_json(text) if fmt == "json" else other.from_csv(text)) == 3
    assert ConceptDictionary.load(store, "t").entries == d.entries  # every field, timestamps included


def test_import_merges_and_reports_bad_rows(store):
    d = ConceptDictionary.load(store, "s")
    d.set(1, name="kept")
    d.set(2, name="replaced", description="old")
    assert d.from_csv("feature,name\n2,new name\n3,added\n") == 2
    entries = {c.feature: c for c in ConceptDictionary.load(store, "s").entries}
    assert (entries[1].name, entries[2].name, entries[2].description, entries[3].name) == (
        "kept", "new name", "", "added")
    with pytest.raises(InvalidInputError, match="CSV line 3"):
        d.from_csv("feature,name\n4,ok\n5,\n")
    with pytest.raises(InvalidInputError, match="lacks name"):
        d.from_csv("feature,label\n1,x\n")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        d.from_json("{")
    with pytest.raises(InvalidInputError, match="concept 1"):
        d.from_json(json.dumps([{"feature": 99, "name": "x"}]))
    assert 4 not in {c.feature for c in ConceptDictionary.load(store, "s").entries}  # a bad import writes nothing


def test_two_stores_editing_the_same_folder(store):
    """Two editors that loaded the dictionary before either wrote: both edits survive."""
    a = ConceptDictionary.load(Store(store.root), "s")
    b = ConceptDictionary.load(Store(store.root), "s")
    a.set(1, name="from a")
    b.set(2, name="from b")
    a.set(3, name="from a again")
    assert {c.feature: c.name for c in ConceptDictionary.load(store, "s").entries} == {
        1: "from a", 2: "from b", 3: "from a again"}
    b.set(1, description="b's description")  # b never saw a's feature 1: it still keeps a's name
    a.set(2, name="a renames b's")          # last write wins for the fields it sets
    final = {c.feature: c for c in ConceptDictionary.load(store, "s").entries}
    assert (final[1].name, final[1].description, final[2].name) == ("from a", "b's description", "a renames b's")
    a.reload()
    assert a.get(2).name == "a renames b's"


def test_concurrent_writers_lose_nothing(store):
    """Two threads with their own Store objects write interleaved, at the same time."""
    errors = []

    def writer(offset: int) -> None:
        try:
            d = ConceptDictionary.load(Store(store.root), "s")
            for i in range(8):
                d.set(offset + i, name=f"writer {offset} feature {i}")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(o,)) for o in (0, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    names = {c.feature: c.name for c in ConceptDictionary.load(store, "s").entries}
    assert names == {o + i: f"writer {o} feature {i}" for o in (0, 8) for i in range(8)}


def test_search_token_uses_feature_cards(tmp_path):
    lm = tiny_model("llama")
    store = Store(tmp_path / "store")
    sae = make_sae()
    save_sae(store, "s", sae)
    data = tmp_path / "t.jsonl"
    data.write_text("".join(json.dumps({"text": "aaa bbb abc " * 3}) + "\n" for _ in range(10)))
    compute_features(lm, sae, str(data), store, "s", FeatureConfig(max_tokens=None, batch_size=4, top_n=5, window=2))
    d = ConceptDictionary.load(store, "s")
    matches = d.search_token("a")
    assert matches and all(m.score > 0 for m in matches)
    assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
    from microw_core.features import feature_card
    for m in matches:
        card = feature_card(store, "s", m.feature)
        assert any(c["tokens"][c["highlight"]] == "a" for c in card["top_contexts"])
        assert m.concept is None
    d.set(matches[0].feature, name="letter a")
    assert d.search_token("a")[0].concept.name == "letter a"
    assert d.search_token("z") == []


# ----- F1 sweep ----------------------------------------------------------------------------------------------


def brute_best_f1(values: torch.Tensor, labels: torch.Tensor, fired: torch.Tensor) -> torch.Tensor:
    """Best F1 over every threshold: predict where fired and value >= threshold."""
    out = torch.zeros(values.shape[1], labels.shape[1], dtype=torch.float64)
    for j in range(values.shape[1]):
        for t in values[fired[:, j], j].unique():
            pred = fired[:, j] & (values[:, j] >= t)
            for c in range(labels.shape[1]):
                tp = int((pred & labels[:, c]).sum())
                out[j, c] = max(out[j, c], 2 * tp / (int(pred.sum()) + int(labels[:, c].sum())))
    return out


def test_best_f1_matches_brute_force():
    torch.manual_seed(0)
    rows, cols, n_labels = 300, 7, 4
    labels = torch.rand(rows, n_labels) < 0.2
    labels[:, 3] = False  # a concept with no positives: F1 0
    values = (torch.rand(rows, cols) * 4).round() / 4 - 0.5  # many ties, negatives too
    values[:, 0] = labels[:, 0].float()  # a perfect detector
    fired = torch.rand(rows, cols) < 0.6
    fired[:, 0] = True
    r, c = torch.nonzero(fired, as_tuple=True)
    f1, threshold = best_f1_sparse(c, r, values[r, c], cols, labels)
    assert torch.allclose(f1, brute_best_f1(values, labels, fired))
    assert f1[0, 0] == 1.0 and threshold[0, 0] == 1.0
    assert (f1[:, 3] == 0).all() and threshold[:, 3].isnan().all()
    # The returned threshold reaches the best F1.
    for j in range(cols):
        for k in range(3):
            pred = fired[:, j] & (values[:, j] >= threshold[j, k])
            tp = int((pred & labels[:, k]).sum())
            assert 2 * tp / (int(pred.sum()) + int(labels[:, k].sum())) == pytest.approx(float(f1[j, k]))
    dense_f1, _ = best_f1_dense(values, labels, block_entries=500)  # several column blocks
    assert torch.allclose(dense_f1, brute_best_f1(values, labels, torch.ones_like(fired)))


# ----- ground truth ---------------------------------------------------------------------------------------------


def test_probe_finds_a_linear_concept_and_not_noise():
    torch.manual_seed(0)
    x = torch.randn(4000, 8) * torch.linspace(0.5, 3, 8)  # unequal scales: the probe standardises
    direction = torch.randn(8)
    linear = x @ direction > 1.0
    noise = torch.rand(4000) < 0.3
    data = LabelledTokens(x, torch.stack([linear, noise], 1), torch.zeros(4000, dtype=torch.long),
                          torch.arange(4000) // 20, ["linear", "noise"])
    f1 = probe_f1(data)
    assert f1[0] > 0.95
    assert f1[1] < 0.55  # predicting everything gives 2 * 0.3 / 1.3 = 0.46


def test_labelled_tokens_mark_the_last_piece_of_each_span():
    lm = tiny_model("llama")  # character tokenizer: token i of a story is character i, every word is in pieces
    stories = generate_stories(6, "test")
    names = [c.name for c in CONCEPTS]
    data = labelled_tokens(lm, "resid_post.0", stories, names, batch_size=4, max_length=400)
    for s, story in enumerate(stories):
        rows = torch.nonzero(data.story == s).flatten()
        assert len(rows) == min(len(story.text), 399)  # BOS and padding are not tokens
        for i in range(len(rows)):
            expected = {c for a, b, c in story.labels if i == b - 1}
            assert {names[c] for c in torch.nonzero(data.labels[rows[i]]).flatten().tolist()} == expected
    assert data.activations.shape == (len(data.story), 32)


def test_evaluate_concepts_and_cli(tmp_path, capsys):
    model_dir = save_tiny_model("llama", tmp_path / "model")
    store = Store(tmp_path / "store")
    sae = make_sae(model=str(model_dir))
    save_sae(store, "s", sae)
    lm = tiny_model("llama")
    result = evaluate_concepts(lm, sae, store, "s", n_stories=12, max_length=200)
    assert result["concepts"] == len(CONCEPTS) == len(result["per_concept"])
    assert 0 <= result["mean_best_f1"] <= 1 and 0 <= result["neuron_mean_best_f1"] <= 1
    assert 0 <= result["probe_mean_best_f1"] <= 1
    assert result["label_source"] == "eval"
    for p in result["per_concept"]:
        assert 0 <= p["f1"] <= 1 and 0 <= p["neuron_f1"] <= 1 and 0 <= p["feature"] < WIDTH
        if p["f1"] > 0:
            assert p["f1"] == pytest.approx(2 * p["precision"] * p["recall"] / (p["precision"] + p["recall"]))
    assert result["recovered"] == sum(p["f1"] >= 0.8 for p in result["per_concept"])
    assert store.read_json("saes/s/concept_eval.json")["mean_best_f1"] == result["mean_best_f1"]
    assert cli_main(["eval", "concepts", "--store", str(store.root), "--sae", "s", "--stories", "12",
                     "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"mean_best_f1", "recovered", "concepts", "neuron_mean_best_f1", "per_concept"} <= set(out)
