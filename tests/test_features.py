"""Feature dashboards on tiny random-init models, checked against brute-force recomputation."""

import json
import random

import pytest
import torch

from microw_core.cli import main as cli_main
from microw_core.errors import InvalidInputError, StoreError
from microw_core.features import (
    FeatureAccumulator, FeatureConfig, compute_features, feature_card, hist_bin, iter_feature_batches,
    load_feature_table, logit_effects, what_fires,
)
from microw_core.hooks import ActivationRecorder
from microw_core.sae import SAEConfig, build_sae, save_sae
from microw_core.store import Store
from tiny_models import save_tiny_model, tiny_model

ALPHABET = "abcdefghij klmnop"
WIDTH = 24


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 45))) for _ in range(n)]


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return str(path)


def make_sae(arch: str = "topk", layer: str = "resid_post.0", model: str = "tiny", seed: int = 1):
    torch.manual_seed(seed)
    k = {"topk": 4, "batchtopk": 4}.get(arch)
    sae = build_sae(SAEConfig(arch=arch, d_in=32, width=WIDTH, k=k, layer=layer, model=model))
    with torch.no_grad():  # spread the encoder biases so features fire at varied rates
        sae.b_enc.copy_(torch.linspace(-0.03, 0.02, WIDTH))
    return sae.eval()


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


CONFIG = FeatureConfig(max_tokens=None, top_n=6, window=3, quantile_bins=5, per_bin=3, hist_bins=20,
                       batch_size=4, max_length=24, sort_window=2)


def brute_force(batches):
    """All rows of a pass in order: activations, tokens, documents, positions, segments."""
    cat = lambda name: torch.cat([getattr(b, name) for b in batches])  # noqa: E731
    return {name: cat(name) for name in ("acts", "token_ids", "doc_index", "position", "segment")}


def brute_context(all_, row: int, feature: int, window: int):
    """Tokens and activations around `row`: same model input, same document, -1 / 0 elsewhere."""
    tokens, acts = [], []
    for r in range(row - window, row + window + 1):
        ok = (0 <= r < len(all_["token_ids"]) and all_["segment"][r] == all_["segment"][row]
              and all_["doc_index"][r] == all_["doc_index"][row])
        tokens.append(int(all_["token_ids"][r]) if ok else -1)
        acts.append(float(all_["acts"][r, feature]) if ok else 0.0)
    return tokens, acts


@pytest.mark.parametrize("arch,pack", [("topk", False), ("relu", False), ("topk", True)])
def test_accumulator_equals_brute_force(llama, tmp_path, arch, pack):
    from dataclasses import replace

    config = replace(CONFIG, pack=pack)
    texts = make_texts(50, seed=3)
    texts += texts[:10]  # repeated texts: equal activations, so top-N ties are broken by row
    data = write_jsonl(tmp_path / "t.jsonl", texts)
    sae = make_sae(arch)
    batches = list(iter_feature_batches(llama, sae, data, config))
    acc = FeatureAccumulator(WIDTH, config)
    for batch in batches:
        acc.add(batch)
    all_ = brute_force(batches)
    A = all_["acts"]
    assert acc.tokens == len(A)
    # Padding and BOS never become rows; every real token does (texts are short enough not to be cut
    # when unpacked; packed windows hold every token plus a BOS per window).
    special = torch.tensor(sorted(llama.special_token_ids))
    assert not torch.isin(all_["token_ids"], special).any()
    if not pack:
        assert len(A) == sum(min(len(t), config.max_length - 1) for t in texts)

    assert torch.equal(acc.count, (A > 0).sum(0))
    assert torch.equal(acc.max, A.max(0).values.clamp(min=0))
    assert torch.allclose(acc.total, A.double().sum(0))
    assert (acc.count > 0).sum() > WIDTH // 2
    top, samples = acc.top.sorted(), acc.samples.sorted()
    kept = top["value"][top["key"] > float("-inf")]
    assert len(kept) > len(kept.unique())  # the tie rule is exercised

    for f in range(WIDTH):
        rows = torch.nonzero(A[:, f] > 0).flatten()
        values = A[rows, f]
        # Top contexts: the exact top-N by (value descending, row ascending).
        order = sorted(range(len(rows)), key=lambda i: (-float(values[i]), int(rows[i])))[: config.top_n]
        expected_rows = [int(rows[i]) for i in order]
        n = len(expected_rows)
        assert top["row"][f, :n].tolist() == expected_rows
        assert torch.equal(top["value"][f, :n], A[expected_rows, f])
        assert (top["key"][f, n:] == float("-inf")).all()
        for slot, row in enumerate(expected_rows):
            tokens, acts = brute_context(all_, row, f, config.window)
            assert top["tokens"][f, slot].tolist() == tokens
            assert top["acts"][f, slot].tolist() == acts
            assert int(top["doc"][f, slot]) == int(all_["doc_index"][row])
            assert int(top["position"][f, slot]) == int(all_["position"][row])
        # Histogram: an exact recount against the final range R, and max <= R < 2 max (or R == first max).
        R = acc.range[f]
        if len(rows) == 0:
            assert R == 0 and acc.hist[f].sum() == 0
            continue
        assert values.max() <= R and (R < 2 * values.max() or R == values.max())
        counts = torch.bincount(hist_bin(values, R.expand(len(values)), config.hist_bins), minlength=config.hist_bins)
        assert torch.equal(acc.hist[f], counts)
        # Bin samples: each bin holds min(per_bin, entries in the bin) distinct entries of that bin.
        per_sample_bin = config.hist_bins // config.quantile_bins
        bins = hist_bin(values, R.expand(len(values)), config.hist_bins) // per_sample_bin
        for b in range(config.quantile_bins):
            group = f * config.quantile_bins + b
            filled = samples["key"][group] > float("-inf")
            assert int(filled.sum()) == min(config.per_bin, int((bins == b).sum()))
            sample_rows = samples["row"][group][filled]
            assert len(set(sample_rows.tolist())) == len(sample_rows)
            assert set(sample_rows.tolist()) <= set(rows[bins == b].tolist())
            assert torch.equal(samples["value"][group][filled], A[sample_rows, f])
            for slot in torch.nonzero(filled).flatten().tolist():
                tokens, acts = brute_context(all_, int(samples["row"][group, slot]), f, config.window)
                assert samples["tokens"][group, slot].tolist() == tokens
                assert samples["acts"][group, slot].tolist() == acts


def test_rows_match_unpadded_forward(llama, tmp_path):
    """Each row's activations are those of its own text run alone (padding never leaks in)."""
    texts = make_texts(12, seed=5)
    sae = make_sae()
    batches = list(iter_feature_batches(llama, sae, write_jsonl(tmp_path / "t.jsonl", texts), CONFIG))
    all_ = brute_force(batches)
    for doc, text in enumerate(texts):
        batch = llama.tokenize([text], max_length=CONFIG.max_length)
        recorder = ActivationRecorder("resid_post.0")
        with llama.hooks(recorder):
            llama.forward(**batch)
        with torch.no_grad():
            expected = sae.encode(recorder.last[0])
        ids = batch["input_ids"][0]
        rows = torch.nonzero(all_["doc_index"] == doc).flatten()
        positions = all_["position"][rows]
        assert positions.tolist() == list(range(1, len(ids)))  # position 0 is BOS: never a row
        assert torch.equal(all_["token_ids"][rows], ids[positions])
        assert torch.allclose(all_["acts"][rows], expected[positions], atol=1e-5)


def test_compute_features_cards(llama, tmp_path):
    texts = make_texts(40, seed=7)
    store = Store(tmp_path / "store")
    sae = make_sae()
    seen = []
    result = compute_features(llama, sae, write_jsonl(tmp_path / "t.jsonl", texts), store, "s", CONFIG,
                              progress=lambda p: seen.append(p.tokens))
    assert result["features"] == WIDTH and result["complete"] is True
    assert result["tokens"] == sum(min(len(t), CONFIG.max_length - 1) for t in texts) == seen[-1]
    assert 0 < result["alive"] <= WIDTH and result["tokens_per_s"] > 0
    table = load_feature_table(store, "s")
    assert list(table["feature"]) == list(range(WIDTH))
    assert {"density", "mean_activation", "max_activation", "label", "count"} <= set(table.columns)
    tokenizer = llama.tokenizer
    for f in range(WIDTH):
        card = feature_card(store, "s", f)
        assert card["density"] == pytest.approx(card["count"] / result["tokens"])
        assert sum(card["histogram"]["counts"]) == card["count"]
        assert len(card["histogram"]["edges"]) == CONFIG.hist_bins + 1
        if card["count"] == 0:
            assert card["top_contexts"] == [] and card["label"] == ""
            continue
        assert card["top_contexts"][0]["value"] == pytest.approx(card["max_activation"])
        for ctx in card["top_contexts"]:
            # The highlight points at the activating token of the document, at its position.
            ids = tokenizer(texts[ctx["doc_index"]])["input_ids"]
            assert ctx["token_ids"][ctx["highlight"]] == ids[ctx["position"]]
            assert ctx["tokens"][ctx["highlight"]] == tokenizer.decode([ids[ctx["position"]]])
            assert ctx["activations"][ctx["highlight"]] == ctx["value"] > 0
            assert max(ctx["activations"]) <= card["max_activation"]
            assert "<pad>" not in ctx["tokens"] and "<s>" not in ctx["tokens"]
            start = ctx["position"] - ctx["highlight"]
            assert ctx["token_ids"] == ids[start:start + len(ctx["token_ids"])]
        for b in card["quantile_samples"]:
            for s in b["samples"]:
                assert b["low"] < s["value"] <= b["high"] + 1e-7
        assert len(card["logits_pos"]) == len(card["logits_neg"]) == 10
        assert card["logits_pos"][0][1] >= card["logits_pos"][-1][1] > card["logits_neg"][-1][1]
        assert len(card["neighbours"]) == 10 and f not in [n for n, _ in card["neighbours"]]
    with pytest.raises(InvalidInputError, match="does not exist"):
        feature_card(store, "s", WIDTH)
    with pytest.raises(StoreError, match="no feature dashboards"):
        feature_card(store, "other", 0)


def test_max_tokens_and_stop(llama, tmp_path):
    from dataclasses import replace

    data = write_jsonl(tmp_path / "t.jsonl", make_texts(40, seed=2))
    store = Store(tmp_path / "store")
    result = compute_features(llama, make_sae(), data, store, "s", replace(CONFIG, max_tokens=101))
    assert result["tokens"] == 101
    calls = []
    stopped = compute_features(llama, make_sae(), data, store, "s2", CONFIG,
                               should_stop=lambda: calls.append(1) or len(calls) > 3)
    assert stopped["complete"] is False and 0 < stopped["tokens"] < result["tokens"] * 10


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma"])
def test_logit_effects_through_final_norm(arch):
    lm = tiny_model(arch)
    sae = make_sae(layer="resid_post.1")
    effects = logit_effects(lm, sae, k=5)
    norm = lm.layer("final_norm").module
    W_U = lm.model.get_output_embeddings().weight.detach()
    dirs = sae.W_dec.detach()
    if arch == "gpt2":  # LayerNorm: centred, times the weight (bias dropped)
        dirs = (dirs - dirs.mean(1, keepdim=True)) * norm.weight.detach()
    elif arch == "gemma":  # Gemma's RMSNorm multiplies by 1 + weight
        dirs = dirs * (1 + norm.weight.detach())
    else:
        dirs = dirs * norm.weight.detach()
    logits = dirs @ W_U.T
    assert torch.equal(effects["pos_ids"], logits.topk(5, dim=1).indices)
    assert torch.allclose(effects["pos_values"], logits.topk(5, dim=1).values, atol=1e-4)
    assert torch.equal(effects["neg_ids"], logits.topk(5, dim=1, largest=False).indices)


def test_what_fires(llama):
    sae = make_sae()
    out = what_fires(llama, sae, "abc dej", top_k=3)
    assert [t["token"] for t in out] == list("abc dej")
    assert [t["position"] for t in out] == list(range(1, 8))  # BOS (position 0) is not listed
    batch = llama.tokenize(["abc dej"])
    recorder = ActivationRecorder("resid_post.0")
    with llama.hooks(recorder):
        llama.forward(**batch)
    with torch.no_grad():
        acts = sae.encode(recorder.last[0])
    for t in out:
        top = acts[t["position"]].topk(3)
        expected = [(int(i), float(v)) for i, v in zip(top.indices, top.values) if v > 0]
        assert [f for f, _ in t["features"]] == [f for f, _ in expected]
        assert [v for _, v in t["features"]] == pytest.approx([v for _, v in expected])
    with pytest.raises(InvalidInputError):
        what_fires(llama, sae, "abc", top_k=0)


def test_config_checks():
    with pytest.raises(InvalidInputError, match="multiple"):
        FeatureConfig(hist_bins=50, quantile_bins=7)
    with pytest.raises(InvalidInputError, match="top_n"):
        FeatureConfig(top_n=0)


def test_cli_features_and_card(tmp_path, capsys):
    model_dir = save_tiny_model("llama", tmp_path / "model")
    store = Store(tmp_path / "store")
    save_sae(store, "s", make_sae(model=str(model_dir)))
    data = write_jsonl(tmp_path / "t.jsonl", make_texts(30))
    assert cli_main(["features", "--store", str(store.root), "--sae", "s", "--dataset", data,
                     "--max-tokens", "300", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["features"] == WIDTH and out["tokens"] == 300 and {"alive", "tokens_per_s"} <= set(out)
    assert cli_main(["feature", "--store", str(store.root), "--sae", "s", "--id", "2", "--json"]) == 0
    card = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"density", "max_activation", "top_contexts", "logits_pos", "logits_neg", "label"} <= set(card)
    assert cli_main(["feature", "--store", str(store.root), "--sae", "s", "--id", "999", "--json"]) == 2
    assert "does not exist" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]


def test_dashboards_of_retrained_sae_are_refused(llama, tmp_path):
    from dataclasses import replace

    store = Store(tmp_path / "store")
    sae = make_sae()
    save_sae(store, "s", sae)
    data = write_jsonl(tmp_path / "t.jsonl", make_texts(10))
    compute_features(llama, sae, data, store, "s", replace(CONFIG, max_tokens=50))
    assert feature_card(store, "s", 0)["id"] == 0
    save_sae(store, "s", make_sae(seed=2))  # trained again under the same name
    with pytest.raises(StoreError, match="earlier weights"):
        feature_card(store, "s", 0)


def test_labels_are_whole_words_weighted_by_rarity():
    from microw_core.features import suggest_labels

    strings = {0: " the", 1: " m", 2: "onkey", 3: ".", 4: " beach", 5: "s", 6: " cat", 7: '"'}
    tokens = torch.tensor([[[0, 1, 2, 3, -1], [4, 5, 3, 7, 6]],     # feature 0: two contexts of 5 tokens
                           [[6, 3, 1, 2, 5], [-1, -1, 0, 4, 3]]])   # feature 1
    acts = torch.tensor([[[0, 1.0, 2, 0, 0], [0, 0, 0, 0, 0]],
                         [[3.0, 0, 0, 1, 0], [0, 0, 0, 2.0, 0]]])
    counts = torch.tensor([100, 5, 5, 100, 3, 50, 4, 20])
    # " m" + "onkey" is one word; "s" continues " monkey"; "the" and "." never fire, so never count.
    assert suggest_labels(tokens, acts, strings, counts) == [["monkey"], ["cat", "beach", "monkeys"]]
    assert suggest_labels(tokens, acts, strings, counts, n_terms=1) == [["monkey"], ["cat"]]
