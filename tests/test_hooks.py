"""Hooks on tiny random-init models of every supported architecture."""

import threading

import pytest
import torch

from microw_core.errors import LayerNotFoundError, ShapeMismatchError
from microw_core.hooks import (ActivationRecorder, AddVector, ClampDirection, FunctionController, InputRecorder,
                               OutputRecorder, ScaleDirection, ZeroDirection)
from microw_core.layers import layer_aliases
from microw_core.model import generate
from tiny_models import ARCHITECTURES, tiny_model

TEXTS = ["hello there, world", "hi"]


@pytest.fixture(scope="module", params=ARCHITECTURES)
def lm(request):
    return tiny_model(request.param)


def test_every_alias_resolves_and_records(lm):
    aliases = layer_aliases(lm.model)
    expected = {"embed", "final_norm"} | {f"{kind}.{i}" for kind in ("resid_pre", "resid_post", "attn_out", "mlp_out")
                                          for i in range(lm.n_layers)}
    assert expected <= set(aliases)
    recorders = [ActivationRecorder(name) for name in sorted(expected)]
    batch = lm.tokenize(TEXTS)
    with lm.hooks(*recorders):
        lm.forward(**batch)
    for recorder in recorders:
        assert recorder.last.shape == (2, batch["input_ids"].shape[1], lm.d_model), recorder.layer
        assert recorder.attention_masks[-1].shape == batch["attention_mask"].shape


def test_resid_post_equals_hidden_states(lm):
    recorders = [ActivationRecorder(f"resid_post.{i}") for i in range(lm.n_layers)]
    pre = ActivationRecorder("resid_pre.1")
    norm = ActivationRecorder("final_norm")
    batch = lm.tokenize(TEXTS)
    with lm.hooks(*recorders, pre, norm):
        hidden = lm.forward(**batch, output_hidden_states=True).hidden_states
    for i, recorder in enumerate(recorders[:-1]):
        torch.testing.assert_close(recorder.last, hidden[i + 1], rtol=0, atol=0)
    torch.testing.assert_close(pre.last, recorders[0].last, rtol=0, atol=0)
    # transformers stores the last block's output after the final norm
    torch.testing.assert_close(norm.last, hidden[-1], rtol=0, atol=0)


def test_zero_vector_is_bit_identical_and_nonzero_changes(lm):
    batch = lm.tokenize(TEXTS)
    plain = lm.forward(**batch).logits
    with lm.hooks(AddVector("resid_post.0", torch.zeros(lm.d_model))):
        zero = lm.forward(**batch).logits
    assert torch.equal(plain, zero)
    with lm.hooks(AddVector("resid_post.0", torch.ones(lm.d_model))):
        changed = lm.forward(**batch).logits
    assert not torch.allclose(plain, changed)


def _hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_removed_after_exit_and_exception(lm):
    batch = lm.tokenize(TEXTS)
    count = _hook_count(lm.model)
    plain = lm.forward(**batch).logits
    with lm.hooks(AddVector("resid_pre.1", torch.ones(lm.d_model))):
        pass
    assert torch.equal(lm.forward(**batch).logits, plain)
    with pytest.raises(RuntimeError, match="boom"):
        with lm.hooks(AddVector("resid_post.0", torch.ones(lm.d_model)), ActivationRecorder("mlp_out.0")):
            raise RuntimeError("boom")
    assert torch.equal(lm.forward(**batch).logits, plain)
    assert _hook_count(lm.model) == count
    assert lm.lock.acquire(blocking=False)  # the lock was released too
    lm.lock.release()


def test_generation_with_hook_active(lm):
    recorder = ActivationRecorder("resid_post.0")
    result = generate(lm, "abc", max_new_tokens=5, hooks=(recorder,))
    assert len(result.token_ids) <= 5
    assert len(recorder.activations) >= 2  # prompt forward, then one per cached step
    assert recorder.activations[1].shape[1] == 1


def test_hooks_on_one_module_run_in_registration_order(lm):
    seen = []
    first = FunctionController("resid_post.0", lambda ctx, a: (seen.append("first"), a * 2)[1])
    second = FunctionController("resid_post.0", lambda ctx, a: (seen.append("second"), a + 1)[1])
    recorder = ActivationRecorder("resid_post.0")
    plain_recorder = ActivationRecorder("resid_post.0")
    batch = lm.tokenize(TEXTS)
    with lm.hooks(plain_recorder, first, second, recorder):
        lm.forward(**batch)
    assert seen == ["first", "second"]
    torch.testing.assert_close(recorder.last, plain_recorder.last * 2 + 1)


def test_direction_controllers(lm):
    direction = torch.randn(lm.d_model)
    unit = direction / direction.norm()
    batch = lm.tokenize(TEXTS)
    for controller, expected in [(ZeroDirection("resid_post.0", direction), 0.0),
                                 (ClampDirection("resid_post.0", direction, 3.0), 3.0)]:
        after = ActivationRecorder("resid_post.0")
        with lm.hooks(controller, after):
            lm.forward(**batch)
        torch.testing.assert_close(after.last @ unit, torch.full(after.last.shape[:2], expected), atol=1e-4, rtol=0)
    before, after = ActivationRecorder("resid_post.0"), ActivationRecorder("resid_post.0")
    with lm.hooks(before, ScaleDirection("resid_post.0", direction, 2.0), after):
        lm.forward(**batch)
    torch.testing.assert_close(after.last @ unit, 2 * (before.last @ unit), atol=1e-4, rtol=1e-4)


def test_input_and_output_recorders(lm):
    inputs, outputs = InputRecorder(), OutputRecorder()
    batch = lm.tokenize(TEXTS)
    with lm.hooks(inputs, outputs):
        logits = lm.forward(**batch).logits
    assert torch.equal(inputs.input_ids[-1], batch["input_ids"].cpu())
    assert torch.equal(inputs.attention_masks[-1], batch["attention_mask"].cpu())
    assert torch.equal(outputs.logits[-1], logits)


def test_threads_with_different_hooks_get_their_own_results(lm):
    batch = lm.tokenize(TEXTS)
    plain = lm.forward(**batch).logits
    vectors = {0: torch.zeros(lm.d_model), 1: torch.ones(lm.d_model) * 3}
    expected = {}
    for t, v in vectors.items():
        with lm.hooks(AddVector("resid_post.0", v)):
            expected[t] = lm.forward(**batch).logits
    results, errors = {t: [] for t in vectors}, []

    def worker(t):
        try:
            for _ in range(5):
                with lm.hooks(AddVector("resid_post.0", vectors[t])):
                    results[t].append(lm.forward(**batch).logits)
                results[t].append(("plain", lm.forward(**batch).logits))
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(t,)) for t in vectors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for t, outs in results.items():
        for out in outs:
            if isinstance(out, tuple):
                assert torch.equal(out[1], plain)
            else:
                assert torch.equal(out, expected[t])


def test_unknown_layer_suggests_names(lm):
    with pytest.raises(LayerNotFoundError, match="Did you mean: resid_post.1"):
        with lm.hooks(ActivationRecorder("resid_pst.1")):
            pass


def test_controller_must_keep_shape(lm):
    bad = FunctionController("resid_post.0", lambda ctx, a: a[:, :1])
    with pytest.raises(ShapeMismatchError):
        with lm.hooks(bad):
            lm.forward(**lm.tokenize(TEXTS))
