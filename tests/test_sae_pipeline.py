"""SAEs on activations captured from tiny random-init transformers: train, evaluate, splice, CLI helpers."""

import math
import random

import pytest
import torch

from microw_core.capture import CaptureConfig, capture, open_run
from microw_core.errors import ShapeMismatchError, StoreError
from microw_core.sae import SAEConfig, TrainConfig, build_sae, load_sae
from microw_core.sae.evaluate import evaluate_sae, splice_metrics
from microw_core.sae.pipeline import TRAIN_KEYS, saes_command, train_command, train_sae
from microw_core.store import Store
from tiny_models import D, save_tiny_model, tiny_model

LAYER = "resid_post.0"
WORDS = "the cat sat on a mat and the dog ran to the park while birds sang in tall green trees".split()


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "." for _ in range(n)]


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    """A gpt2 tiny model saved to disk (so the run's model can be reloaded by name) and a captured run."""
    root = tmp_path_factory.mktemp("sae_pipeline")
    folder = save_tiny_model("gpt2", root / "model")
    lm = tiny_model("gpt2")
    lm.name = str(folder)
    data = root / "texts.txt"
    data.write_text("\n".join(texts(700)))
    store = Store(root / "store")
    capture(lm, str(data), CaptureConfig(layers=[LAYER], max_length=64, shard_tokens=4_000), store, run="r")
    return lm, store


def small(**kw) -> TrainConfig:
    return TrainConfig(**({"arch": "topk", "width": 4 * D, "k": 8, "tokens": 30_000, "batch_size": 512,
                          "buffer_tokens": 4_096, "init_tokens": 2_048, "log_every": 10, "device": "cpu"} | kw))


def test_train_sae_on_a_run_saves_and_evaluates(captured):
    lm, store = captured
    progress = []
    result = train_sae(store, "r", LAYER, small(), progress=progress.append, name="tk", lm=lm)
    assert result.complete and progress and progress[-1]["step"] == small().steps
    metrics = result.metrics
    assert metrics["heldout_tokens"] >= 2_048 and metrics["train_tokens"] + metrics["heldout_tokens"] == open_run(
        store, "r").tokens
    assert metrics["explained_variance"] > 0.5 and metrics["l0"] == pytest.approx(8, abs=0.01)
    assert 0 <= metrics["dead_fraction"] <= 1 and 0 <= metrics["dense_fraction"] <= 1
    assert sum(metrics["log_density_hist"]["counts"]) + metrics["log_density_hist"]["dead"] == 4 * D
    # The splice (a random model's CE barely depends on the layer, so only exactness is checked here).
    assert all(math.isfinite(metrics[k]) for k in ("ce_clean", "ce_sae", "ce_zero_ablation", "ce_loss_recovered"))
    assert metrics["ce_loss_recovered_with_error"] == pytest.approx(1.0, abs=1e-3)
    assert metrics["kl_with_error"] == pytest.approx(0.0, abs=1e-4) and metrics["kl"] > 0
    assert not store.path("checkpoints", "tk").exists()

    loaded = load_sae(store, "tk")
    assert loaded.cfg.layer == LAYER and loaded.cfg.run == "r" and loaded.cfg.model == lm.name
    assert store.read_json("saes/tk/metrics.json")["explained_variance"] == metrics["explained_variance"]
    assert store.read_json("saes/tk/training.json")["history"] == result.history
    again = evaluate_sae(lm, loaded, store, "r", LAYER)
    assert again["explained_variance"] == pytest.approx(metrics["explained_variance"], abs=1e-6)
    assert again["ce_loss_recovered"] == pytest.approx(metrics["ce_loss_recovered"], abs=1e-5)


def test_train_command_and_saes_command(captured):
    _, store = captured
    out = train_command(store, "r", LAYER, arch="batchtopk", width=2 * D, k=4, tokens=8_000, name="cli")
    assert set(TRAIN_KEYS) <= out.keys() and out["sae"] == "cli"
    assert all(isinstance(out[key], float) and math.isfinite(out[key]) for key in TRAIN_KEYS[1:])
    listed = {row["name"]: row for row in saes_command(store)["saes"]}
    assert listed["cli"]["arch"] == "batchtopk" and listed["cli"]["k"] == 4
    assert listed["cli"]["explained_variance"] == out["explained_variance"]


def test_sweep_of_k_in_one_pass(captured):
    from microw_core.sae.pipeline import train_saes

    _, store = captured
    results = train_saes(store, "r", LAYER, [small(k=2, tokens=8_000), small(k=6, tokens=8_000)])
    assert [r.sae.cfg.k for r in results] == [2, 6] and results[0].name != results[1].name
    assert results[1].metrics["explained_variance"] > results[0].metrics["explained_variance"]


def test_splicing_an_sae_of_another_width_is_a_shape_mismatch(captured):
    lm, _ = captured
    sae = build_sae(SAEConfig("topk", d_in=D // 2, width=64, k=4, layer=LAYER))
    with pytest.raises(ShapeMismatchError, match=f"{D // 2}-dimensional"):
        splice_metrics(lm, sae, LAYER, ["the cat sat."])


def test_unknown_layer_names_the_run_layers(captured):
    _, store = captured
    with pytest.raises(StoreError, match=LAYER):
        train_sae(store, "r", "resid_post.9", small())


def test_zero_ablation_is_worse_than_the_clean_model(captured):
    lm, _ = captured
    sae = build_sae(SAEConfig("relu", d_in=D, width=2 * D))
    with torch.no_grad():  # an SAE that reconstructs perfectly: identity through 2D latents (x = relu(x) - relu(-x))
        eye = torch.eye(D)
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    metrics = splice_metrics(lm, sae, LAYER, texts(6, seed=3))
    assert metrics["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-4) and metrics["kl"] < 1e-6


def test_special_tokens_kept_by_a_capture_are_not_trained_on(captured, tmp_path):
    from microw_core.sae.data import run_rows

    lm, _ = captured
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(texts(20)))
    store = Store(tmp_path / "store")
    capture(lm, str(data), CaptureConfig(layers=[LAYER], keep_special=True, shard_tokens=50), store, run="s")
    run = open_run(store, "s")
    special = run.meta()["special"].bool()
    assert special.any()
    rows = torch.cat(list(run_rows(run, LAYER)))
    assert torch.equal(rows, run.load(LAYER)[~special])
