"""Steering on tiny random-init models of several architectures, with real (random-init) SAEs."""

import json

import pytest
import torch

from microw_core.cli import main
from microw_core.errors import InvalidInputError, ShapeMismatchError, StoreCorruptError, StoreError
from microw_core.hooks import ActivationRecorder, FunctionController, OutputRecorder
from microw_core.model import generate
from microw_core.sae import SAEConfig, build_sae, save_sae
from microw_core.steering import (DEFAULT_STRENGTHS, FeatureEdit, FeatureEncoder, SAESteering, compare, feature_trace, SteeringConfig, SteeringEvalConfig, SteeringScales,
                                  caa_vector, control_hook, evaluate_steering, layer_mean, list_vectors, load_vector,
                                  save_vector, steer, steering_scales)
from microw_core.store import Store
from tiny_models import D, save_tiny_model, tiny_model

ARCHS = ("gpt2", "llama", "gpt_neox", "opt", "gemma")
LAYER = "resid_post.0"
PROMPT = "hello there"
TOKENS = 8


def make_sae(arch: str = "relu", layer: str = LAYER, seed: int = 0, **extra):
    torch.manual_seed(seed)
    sae = build_sae(SAEConfig(arch=arch, d_in=D, width=64, layer=layer, model="tiny", **extra)).eval()
    with torch.no_grad():
        sae.b_enc.fill_(0.05)  # random-init encoders fire on about half the features
    return sae.requires_grad_(False)


@pytest.fixture(scope="module", params=ARCHS)
def lm(request):
    return tiny_model(request.param)


SAE_FOR = {"gpt2": "relu", "llama": "topk", "gpt_neox": "jumprelu", "opt": "topk", "gemma": "batchtopk"}


@pytest.fixture(scope="module")
def sae(lm):
    """A different SAE architecture per model architecture (every pairing would double the test time)."""
    arch = SAE_FOR[lm.name.removeprefix("tiny-")]
    sae = make_sae(arch, **({"k": 8} if "topk" in arch else {}))
    if hasattr(sae, "threshold"):
        with torch.no_grad():
            sae.threshold.fill_(0.02)
    return sae


def layer_io(lm, hook, texts=(PROMPT,)):
    """The layer's activation before and after `hook` on one forward."""
    before, after = ActivationRecorder(hook.layer), ActivationRecorder(hook.layer)
    with lm.hooks(before, hook, after):
        lm.forward(**lm.tokenize(list(texts)))
    return before.last, after.last


def unit_row(sae, feature):
    row = sae.W_dec.detach()[feature]
    return row / row.norm()


# ----- bit-identity ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["add", "clamp", "ablate"])
def test_strength_zero_is_bit_identical(lm, sae, method):
    plain = generate(lm, PROMPT, max_new_tokens=TOKENS)
    hook = SAESteering(sae, [FeatureEdit(3, 0.0, method), FeatureEdit(7, 0.0, method)], positions="all")
    assert not hook.active
    recorders = OutputRecorder(), OutputRecorder()
    with lm.hooks(recorders[0]):
        lm.forward(**lm.tokenize([PROMPT]))
    with lm.hooks(hook, recorders[1]):
        lm.forward(**lm.tokenize([PROMPT]))
    assert torch.equal(recorders[0].logits[0], recorders[1].logits[0])
    assert generate(lm, PROMPT, max_new_tokens=TOKENS, hooks=(hook,)).token_ids == plain.token_ids
    result = steer(lm, sae, [FeatureEdit(3, 0.0, method)], PROMPT, SteeringConfig(max_new_tokens=TOKENS))
    assert result["baseline"] == result["steered"] == plain.text


def test_no_features_and_sampling_are_bit_identical(lm, sae):
    config = SteeringConfig(max_new_tokens=TOKENS, temperature=1.0, seed=3)
    plain = generate(lm, PROMPT, max_new_tokens=TOKENS, temperature=1.0, seed=3)
    result = steer(lm, sae, [], PROMPT, config)
    assert result["baseline"] == result["steered"] == plain.text
    assert result["activations"] == {} and result["prompt_baseline"] is None


def test_clamping_to_the_current_value_changes_nothing(lm):
    sae = make_sae()
    before, _ = layer_io(lm, SAESteering(sae, []))
    feature = int(sae.encode(before)[0, -1].argmax())
    value = float(FeatureEncoder(sae, [feature])(before)[0, -1, 0])  # as the hook computes it
    assert value > 0
    hook = SAESteering(sae, [FeatureEdit(feature, value, "clamp", "raw")], positions="generated")
    _, after = layer_io(lm, hook)
    assert torch.equal(before, after)


# ----- add and clamp -------------------------------------------------------------------------------------------


def test_add_moves_along_the_unit_decoder_direction(lm, sae):
    before, after = layer_io(lm, SAESteering(sae, [FeatureEdit(3, 2.5, "add", "raw")]))
    expected = 2.5 * unit_row(sae, 3)
    assert torch.allclose(after - before, expected.expand_as(before), atol=1e-5)


def test_clamp_sets_the_feature_and_keeps_the_reconstruction_error(lm):
    sae = make_sae("relu")  # W_enc = W_dec^T at init: the clamped feature's pre-activation moves by exactly the change
    before, after = layer_io(lm, SAESteering(sae, [FeatureEdit(4, 0.7, "clamp", "raw")]))
    f_before, f_after = sae.encode(before), sae.encode(after)
    active = f_before[..., 4] > 0
    assert active.any()
    assert torch.allclose(f_after[..., 4][active], torch.full((int(active.sum()),), 0.7), atol=1e-5)
    # Where it was silent its negative pre-activation is part of the kept error, so it lands a little lower.
    assert (f_after[..., 4][~active] <= 0.7 + 1e-5).all() and (f_after[..., 4] > 0).all()
    # x + (f_new - f) @ W_dec: what the SAE does not reconstruct stays in the activation.
    error_before = before - sae.decode(f_before)
    set_f = f_before.clone()
    set_f[..., 4] = 0.7
    assert torch.allclose(after - sae.decode(set_f), error_before, atol=1e-5)


def test_clamp_on_a_topk_sae(lm):
    sae = make_sae("topk", k=4)
    before, after = layer_io(lm, SAESteering(sae, [FeatureEdit(9, 1.5, "clamp", "raw")]))
    f_before = sae.encode(before)[..., 9]
    assert torch.allclose(after - before, (1.5 - f_before).unsqueeze(-1) * sae.W_dec.detach()[9], atol=1e-5)
    assert (sae.encode(after)[..., 9] > f_before).all()


def test_ablate_removes_the_feature(lm):
    sae = make_sae("relu")
    before, after = layer_io(lm, SAESteering(sae, [FeatureEdit(2, 1.0, "ablate")]))
    assert sae.encode(before)[..., 2].gt(0).any()
    assert torch.allclose(sae.encode(after)[..., 2], torch.zeros(1), atol=1e-5)


def test_several_features_at_once(lm, sae):
    edits = [FeatureEdit(1, 1.0, "add", "raw"), FeatureEdit(6, -0.5, "add", "raw"), FeatureEdit(9, 0.8, "clamp", "raw")]
    before, after = layer_io(lm, SAESteering(sae, edits))
    f9 = sae.encode(before)[..., 9]
    expected = (unit_row(sae, 1) - 0.5 * unit_row(sae, 6)).expand_as(before) \
        + (0.8 - f9).unsqueeze(-1) * sae.W_dec.detach()[9]
    assert torch.allclose(after - before, expected, atol=1e-5)
    result = steer(lm, sae, edits, PROMPT, SteeringConfig(max_new_tokens=TOKENS))
    assert set(result["activations"]) == {1, 6, 9}
    assert all(len(v) == len(result["tokens"]["steered"]) for v in result["activations"].values())


def test_strength_units():
    sae = make_sae()
    scales = SteeringScales(max_activation=torch.full((64,), 2.0), median_norm=10.0, source="test")
    hook = SAESteering(sae, [FeatureEdit(0, 3.0), FeatureEdit(1, 0.5, unit="median_norm"),
                             FeatureEdit(2, 1.5, "clamp"), FeatureEdit(3, 0.25, "ablate")], scales)
    assert hook.values[0].tolist() == [6.0, 5.0, 3.0, 0.25]
    with pytest.raises(InvalidInputError, match="SteeringScales"):
        SAESteering(sae, [FeatureEdit(0, 1.0)])


def test_scales_are_estimated_from_texts_or_the_run(tmp_path):
    lm, sae = tiny_model("llama"), make_sae()
    scales = steering_scales(lm, sae, texts=["hello there world", "a second text"])
    assert scales.source == "texts" and scales.median_norm > 0 and (scales.max_activation > 0).all()
    with pytest.raises(InvalidInputError, match="texts"):
        steering_scales(lm, sae, Store(tmp_path))


# ----- positions and rows -------------------------------------------------------------------------------------


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_positions(lm, positions):
    sae = make_sae()
    edits = []

    def record(ctx, act):
        edits.append((ctx.past_length, act.clone()))
        return act

    before = FunctionController(LAYER, record)
    hook = SAESteering(sae, [FeatureEdit(3, 1.0, "add", "raw")], positions=positions)
    after = []
    result = generate(lm, PROMPT, max_new_tokens=4, hooks=(
        before, hook, FunctionController(LAYER, lambda ctx, act: after.append(act.clone()) or act)))
    changed = [(past, (a - b[1]).norm(dim=-1)[0] > 0) for b, a, past in zip(edits, after, (e[0] for e in edits))]
    prompt_past, prompt_changed = changed[0]
    assert prompt_past == 0 and len(changed) == len(result.token_ids)
    steps = torch.cat([c for _, c in changed[1:]])
    if positions == "all":
        assert prompt_changed.all() and steps.all()
    elif positions == "prompt":
        assert prompt_changed.all() and not steps.any()
    else:  # the last prompt position predicts the first new token
        assert prompt_changed.tolist() == [False] * (len(prompt_changed) - 1) + [True] and steps.all()


def test_row_strengths_steer_only_their_rows_and_never_padding():
    lm, sae = tiny_model("llama"), make_sae()
    hook = SAESteering(sae, [FeatureEdit(3, 1.0, "add", "raw")], row_strengths=torch.tensor([[0.0], [2.0]]))
    before, after = ActivationRecorder(LAYER), ActivationRecorder(LAYER)
    batch = lm.tokenize(["hi", "hello there"], padding_side="left")
    with lm.hooks(before, hook, after):
        lm.forward(**batch)
    diff = (after.last - before.last).norm(dim=-1)
    assert torch.equal(after.last[0], before.last[0])
    assert diff[1].gt(0).all()
    with pytest.raises(ShapeMismatchError):
        with lm.hooks(hook):
            lm.forward(**lm.tokenize(["a", "b", "c"]))


# ----- direct control and CAA vectors ---------------------------------------------------------------------------


def test_control_ops(lm):
    vector = torch.randn(D, generator=torch.Generator().manual_seed(1))
    before, added = layer_io(lm, control_hook("add", LAYER, vector, 0.5))
    _, subtracted = layer_io(lm, control_hook("subtract", LAYER, vector, 0.5))
    assert torch.allclose(added - before, before - subtracted, atol=1e-5)
    _, zeroed = layer_io(lm, control_hook("zero", LAYER, vector))
    assert torch.allclose(zeroed @ (vector / vector.norm()), torch.zeros(1), atol=1e-5)
    _, clamped = layer_io(lm, control_hook("clamp", LAYER, vector, 3.0))
    assert torch.allclose(clamped @ (vector / vector.norm()), torch.full((1,), 3.0), atol=1e-4)
    _, prompt_only = layer_io(lm, control_hook("scale", LAYER, vector, 2.0, positions="generated"))
    assert torch.equal(prompt_only[0, :-1], before[0, :-1]) and not torch.equal(prompt_only[0, -1], before[0, -1])
    result = compare(lm, PROMPT, [control_hook("add", LAYER, vector, 0.0)], SteeringConfig(max_new_tokens=TOKENS))
    assert result["baseline"] == result["steered"] == generate(lm, PROMPT, max_new_tokens=TOKENS).text


POSITIVE = ["the cat sat on the mat", "a cat and a hat", "that cat ran fast", "cats can nap all day",
            "a fat cat sat", "the black cat", "my cat naps", "cat, cat, cat"]
NEGATIVE = ["4 + 5 = 9", "12 * 3 = 36", "7 - 2 = 5", "100 / 4 = 25", "8 + 8 = 16", "3 * 3 = 9",
            "90 - 9 = 81", "6 / 2 = 3"]
HELD_OUT_NEGATIVE = ["5 + 6 = 11", "9 * 9 = 81", "10 - 3 = 7", "2 + 2 = 4"]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
@pytest.mark.parametrize("aggregate", ["last", "mean"])
def test_caa_vector_steers_towards_the_positive_set(arch, aggregate):
    lm = tiny_model(arch)
    vector = caa_vector(lm, LAYER, POSITIVE, NEGATIVE, aggregate=aggregate)
    assert torch.allclose(vector, layer_mean(lm, LAYER, POSITIVE, aggregate) - layer_mean(lm, LAYER, NEGATIVE, aggregate))
    # Nearest class mean one block deeper, on prompts the vector was not built from: held-out negative prompts
    # sit nearer the negative mean; adding the vector (at every position) moves every one of them nearer the
    # positive mean, which a random vector of the same norm does not.
    deep = f"resid_post.{lm.n_layers - 1}"
    positive, negative = layer_mean(lm, deep, POSITIVE, aggregate), layer_mean(lm, deep, NEGATIVE, aggregate)

    def margins(hooks) -> torch.Tensor:  # > 0: nearer the positive mean
        recorder = ActivationRecorder(deep)
        batch = lm.tokenize(HELD_OUT_NEGATIVE)
        with lm.hooks(*hooks, recorder):
            lm.forward(**batch)
        last = batch["attention_mask"].sum(1) - 1
        acts = (recorder.last[torch.arange(len(last)), last] if aggregate == "last" else
                torch.stack([recorder.last[i, 1:n + 1].mean(0) for i, n in enumerate(last.tolist())]))  # no BOS
        return (acts - negative).norm(dim=-1) - (acts - positive).norm(dim=-1)

    random = torch.randn(D, generator=torch.Generator().manual_seed(0))
    random = random / random.norm() * vector.norm()
    assert (margins(()) < 0).all()
    assert (margins((control_hook("add", LAYER, vector),)) > 0).all()
    assert margins((control_hook("add", LAYER, random),)).mean() < 0


def test_vectors_round_trip(tmp_path):
    store = Store(tmp_path)
    vector = torch.randn(D)
    meta = {"layer": LAYER, "model": "tiny-llama", "kind": "caa", "positive": ["a"], "scale": 1.5}
    record = save_vector(store, "cats vs sums", vector, meta)
    assert record.path == "vectors/cats_vs_sums.safetensors"
    loaded, loaded_meta = load_vector(store, "cats vs sums")
    assert torch.equal(loaded, vector) and loaded_meta == meta
    assert [v["name"] for v in list_vectors(store)] == ["cats_vs_sums"]
    with pytest.raises(StoreError, match="cats_vs_sums"):
        load_vector(store, "missing")
    with pytest.raises(InvalidInputError):
        save_vector(store, "bad", torch.randn(2, D))
    path = store.root / record.path
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(StoreCorruptError):
        load_vector(store, "cats vs sums")


# ----- steer(), evaluation and CLI ----------------------------------------------------------------------------------


def test_steer_result(lm, sae):
    scales = steering_scales(lm, sae, texts=[PROMPT, "another text here"])
    result = steer(lm, sae, [FeatureEdit(3, 6.0)], PROMPT, SteeringConfig(max_new_tokens=TOKENS), scales=scales,
                   concept_names={3: "ocean"})
    assert result["baseline"] == generate(lm, PROMPT, max_new_tokens=TOKENS).text
    assert result["prompt_baseline_prompt"].endswith(PROMPT) and result["prompt_baseline"] is not None
    assert result["edits"][0]["value"] == pytest.approx(6.0 * float(scales.max_activation[3]))
    steered, base = result["activations"][3], result["baseline_activations"][3]
    assert len(steered) == len(result["tokens"]["steered"]) and len(base) == len(result["tokens"]["baseline"])
    assert sum(steered) / len(steered) > sum(base) / len(base)
    with pytest.raises(InvalidInputError, match="0..63"):
        steer(lm, sae, [FeatureEdit(64, 1.0, unit="raw")], PROMPT)
    with pytest.raises(InvalidInputError, match="method"):
        FeatureEdit(1, 1.0, "push")


def test_evaluate_steering_runs_end_to_end():
    lm, sae = tiny_model("llama"), make_sae()
    config = SteeringEvalConfig(max_new_tokens=4, samples=1, stories_per_topic=1, batch_size=8, unit="raw")
    result = evaluate_steering(lm, sae, None, None, strengths=[0, 1, 2, 4, 8, 16], config=config,
                               topics=["ocean", "forest"])
    assert result["topics"] == 2 and set(result["per_topic"]) == {"ocean", "forest"}
    for topic in result["per_topic"].values():
        assert len(topic["success"]) == len(topic["ppl"]) == len(topic["activation"]) == 6
        assert topic["activation"][-1] > topic["activation"][0] and topic["monotonic"]
        assert topic["ppl_ratio"][0] == pytest.approx(1.0)
    assert result["per_topic"]["ocean"]["feature"] != result["per_topic"]["forest"]["feature"]
    for key in ("succeeded", "mean_success", "mean_baseline", "mean_ppl_ratio"):
        assert key in result


def test_cli_steer(tmp_path, capsys):
    model = save_tiny_model("llama", tmp_path / "model")
    store = Store(tmp_path / "store")
    sae = make_sae()
    sae.cfg.model = str(model)
    save_sae(store, "tiny", sae)
    args = ["steer", "--store", str(store.root), "--sae", "tiny", "--prompt", PROMPT, "--feature", "3=0",
            "--max-new-tokens", "6", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["baseline"] == out["steered"] and "prompt_baseline" in out
    assert main(args[:-1] + ["--feature", "5=2", "--unit", "raw", "--method", "clamp", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {e["feature"] for e in out["edits"]} == {3, 5}
    assert main(["steer", "--store", str(store.root), "--sae", "tiny", "--prompt", "x", "--feature", "3", "--json"]) == 2
    assert "F=STRENGTH" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
    assert main(["eval", "steering", "--store", str(store.root), "--sae", "tiny", "--topics", "ocean", "--samples", "1",
                 "--max-new-tokens", "3", "--stories-per-topic", "1", "--unit", "raw", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"topics", "succeeded", "mean_success", "mean_baseline", "mean_ppl_ratio", "per_topic"} <= set(out)
    assert out["topics"] == 1 and len(out["per_topic"]["ocean"]["success"]) == len(DEFAULT_STRENGTHS)


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_feature_encoder_matches_encode(arch):
    sae = make_sae(arch, **({"k": 8} if "topk" in arch else {}))
    if hasattr(sae, "threshold"):
        with torch.no_grad():
            sae.threshold.uniform_(0.0, 0.3)
    x = torch.randn(2, 5, D)
    features = [3, 0, 17, 63]
    assert torch.allclose(FeatureEncoder(sae, features)(x), sae.encode(x)[..., features], atol=1e-6)
    # feature_trace reads, after the edit, the position that produced each generated token.
    lm = tiny_model("llama")
    hook = SAESteering(sae, [FeatureEdit(3, 1.5, "add", "raw"), FeatureEdit(17, 0.9, "clamp", "raw")],
                       positions="generated")
    after = ActivationRecorder(LAYER)
    result = generate(lm, PROMPT, max_new_tokens=5, hooks=(hook, after))
    trace = feature_trace(lm, sae, PROMPT, result.token_ids, features, hook)
    produced = torch.stack([a[0, -1] for a in after.activations])  # the last prompt position, then each step
    assert len(produced) == len(result.token_ids)
    assert torch.allclose(torch.tensor([trace[f] for f in features]).T, sae.encode(produced)[..., features], atol=1e-4)


def test_scales_from_the_run_and_the_feature_table(tmp_path):
    from microw_core.capture import CaptureConfig, capture, open_run
    from microw_core.features import FeatureConfig, compute_features

    lm, store = tiny_model("llama"), Store(tmp_path / "store")
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": f"story {i}: the cat sat on mat {i}"}) + "\n" for i in range(12)))
    capture(lm, str(texts), CaptureConfig(layers=[LAYER], batch_size=4, max_length=64), store, run="r")
    sae = make_sae()
    sae.cfg.run = "r"
    save_sae(store, "s", sae)
    run = open_run(store, "r").load(LAYER)
    scales = steering_scales(lm, sae, store, "s")
    assert scales.source == "run:r"
    assert scales.median_norm == pytest.approx(float(run.norm(dim=-1).median()))
    fired = sae.encode(run).amax(0)
    assert torch.allclose(scales.max_activation[fired > 0], fired[fired > 0], atol=1e-5)
    compute_features(lm, sae, str(texts), store, "s", FeatureConfig(max_tokens=2_000, batch_size=4, max_length=64))
    table = steering_scales(lm, sae, store, "s")
    assert table.source == "feature_table" and table is steering_scales(lm, sae, store, "s")  # cached
    assert torch.allclose(table.max_activation[fired > 0], fired[fired > 0], atol=1e-4)
