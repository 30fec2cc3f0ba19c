"""SAE architectures, trainer, storage and SAELens format, on activations with planted sparse structure."""

import json

import pytest
import torch

from microw_core.errors import InvalidInputError, SAEConfigError, ShapeMismatchError, StoreCorruptError
from microw_core.sae import SAEConfig, SAETrainer, TrainConfig, build_sae, load_sae, save_sae
from microw_core.sae.data import geometric_median, heldout_split, shuffled_batches
from microw_core.sae.saelens import export_saelens, import_saelens
from microw_core.sae.sparse import SparseCodes, SparseDecode, SparsePreacts, batch_topk_pairs, topk_indices
from microw_core.store import Store

D = 32
WIDTH = 128
ATOMS = 96  # planted directions: a width-128 dictionary may leave up to 32 latents with nothing to learn
ARCHS = ("relu", "topk", "batchtopk", "jumprelu")


def planted(n: int, seed: int = 0, d: int = D, atoms: int = ATOMS, active: int = 4) -> torch.Tensor:
    """Each row: a few of `atoms` fixed unit directions with random positive weights, an offset and noise."""
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(atoms, d, generator=torch.Generator().manual_seed(123))
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    chosen = torch.rand(n, atoms, generator=g).topk(active, dim=1).indices
    weights = torch.zeros(n, atoms).scatter_(1, chosen, torch.rand(n, active, generator=g) * 3 + 1)
    return weights @ dictionary * 4 + 1.5 + 0.02 * torch.randn(n, d, generator=g)


DATA = planted(24_000)


def source(data=DATA, chunk=5_000):
    return lambda: iter(data.split(chunk))


def config(arch: str, **kw) -> TrainConfig:
    defaults = dict(arch=arch, width=WIDTH, tokens=40_000, batch_size=512, buffer_tokens=4_096, init_tokens=2_048,
                    log_every=10, device="cpu")
    defaults.update({"topk": dict(k=4), "batchtopk": dict(k=4), "relu": dict(l1_coeff=0.5),
                     "jumprelu": dict(l0_coeff=0.01)}[arch])
    return TrainConfig(**(defaults | kw))


@pytest.fixture(scope="module")
def trained():
    """One trained SAE per architecture (trained once for the whole module)."""
    return {arch: SAETrainer(config(arch), D).fit(source())[0] for arch in ARCHS}


# ----- training ------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_each_architecture_trains(arch, trained):
    history = trained[arch].history
    first, last = history[0], history[-1]
    assert last["loss"] < 0.8 * first["loss"], (first, last)
    assert last["explained_variance"] > first["explained_variance"] + 0.1 and last["explained_variance"] > 0.45
    alive = (1 - last["dead_fraction"]) * WIDTH
    assert alive >= 0.9 * ATOMS, f"only {alive:.0f} live latents for {ATOMS} planted directions"
    assert {"step", "tokens", "loss", "explained_variance", "l0", "dead_fraction", "tokens_per_s"} <= last.keys()


@pytest.mark.parametrize("arch", ARCHS)
def test_decoder_rows_have_unit_norm(arch, trained):
    norms = trained[arch].sae.W_dec.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_topk_l0_is_exactly_k(trained):
    f = trained["topk"].sae.encode(planted(2_000, seed=9))
    assert ((f > 0).sum(-1) == 4).all()


def test_batchtopk_runs_as_jumprelu_with_about_k_latents(trained):
    sae = trained["batchtopk"].sae
    threshold = sae.threshold
    assert (threshold > 0).all() and torch.allclose(threshold, threshold[0].expand_as(threshold))
    l0 = (sae.encode(planted(2_000, seed=9)) > 0).sum(-1).float().mean()
    assert 2 <= l0 <= 8  # k = 4 on average


def test_saes_read_raw_activations(trained):
    """The input scaling used in training is folded into the weights: raw inputs reconstruct well."""
    x = planted(2_000, seed=5)
    for arch in ARCHS:
        x_hat = trained[arch].sae(x)
        ev = 1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
        assert ev > 0.45, arch


def test_sweep_trains_several_saes_in_one_pass():
    results = SAETrainer([config("topk", k=2, tokens=10_000), config("topk", k=6, tokens=10_000)], D).fit(source())
    assert [r.sae.cfg.k for r in results] == [2, 6]
    assert results[1].history[-1]["explained_variance"] > results[0].history[-1]["explained_variance"]


def test_sweep_members_must_share_the_data_settings():
    with pytest.raises(SAEConfigError, match="batch_size"):
        SAETrainer([config("topk"), config("topk", batch_size=256)], D)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "relu"])
def test_resume_from_checkpoint_matches_uninterrupted_run(arch, tmp_path):
    cfg = config(arch, tokens=12_000, checkpoint_every=10)
    reference = SAETrainer(cfg, D).fit(source())[0].sae

    store = Store(tmp_path)
    calls = iter(range(100))
    stop_after_first_log = lambda: next(calls) == 0  # noqa: E731
    first = SAETrainer(cfg, D).fit(source(), checkpoint=(store, "ckpt"), should_stop=stop_after_first_log)[0]
    assert not first.complete and store.exists("ckpt/state.json")
    resumed_trainer = SAETrainer(cfg, D)
    resumed = resumed_trainer.fit(source(), checkpoint=(store, "ckpt"), resume=True)[0]
    assert resumed.complete and len(resumed.history) == len(first.history) + 2
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.sae.state_dict()[name]), name


def test_resume_refuses_other_settings(tmp_path):
    store = Store(tmp_path)
    SAETrainer(config("topk", tokens=12_000), D).fit(source(), checkpoint=(store, "c"), should_stop=lambda: True)
    with pytest.raises(SAEConfigError, match="other settings"):
        SAETrainer(config("topk", tokens=12_000, k=5), D).fit(source(), checkpoint=(store, "c"), resume=True)


def test_outliers_are_dropped_and_do_not_set_the_scale():
    data = DATA.clone()
    data[::50] *= 100  # 2% of rows with a huge norm
    trainer = SAETrainer(config("topk", tokens=5_000), D)
    trainer.fit(source(data))
    clean = SAETrainer(config("topk", tokens=5_000), D)
    clean.fit(source())
    assert trainer.scale == pytest.approx(clean.scale, rel=0.05)


# ----- errors ----------------------------------------------------------------------------------------


def test_wrong_width_activations_give_shape_mismatch():
    with pytest.raises(ShapeMismatchError, match="d_in=32"):
        SAETrainer(config("topk"), D).fit(source(planted(5_000, d=16)))
    sae = build_sae(SAEConfig("topk", d_in=D, width=WIDTH, k=4))
    with pytest.raises(ShapeMismatchError, match="32-dimensional"):
        sae.encode(torch.randn(3, 16))


def test_nan_input_gives_invalid_input():
    data = DATA.clone()
    data[123, 4] = float("nan")
    with pytest.raises(InvalidInputError, match="NaN"):
        SAETrainer(config("topk"), D).fit(source(data))
    sae = build_sae(SAEConfig("relu", d_in=D, width=WIDTH))
    with pytest.raises(InvalidInputError, match="NaN"):
        sae.encode(torch.full((2, D), float("nan")))


@pytest.mark.parametrize("kwargs, match", [
    (dict(arch="topk", k=None), "need k"),
    (dict(arch="topk", k=0), "need k"),
    (dict(arch="relu", k=8), "k does not apply"),
    (dict(arch="gated"), "Unknown SAE architecture"),
    (dict(arch="relu", l1_coeff=-1.0), "positive"),
])
def test_bad_configs_are_explained(kwargs, match):
    with pytest.raises(SAEConfigError, match=match):
        SAEConfig(d_in=D, width=WIDTH, **kwargs)


def test_heldout_split_needs_enough_tokens():
    assert heldout_split(100_000).eval_tokens == 10_000
    with pytest.raises(InvalidInputError, match="too few"):
        heldout_split(3_000)


# ----- saving, loading, SAELens ---------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip(arch, trained, tmp_path):
    store = Store(tmp_path)
    sae = trained[arch].sae
    save_sae(store, "s", sae, metrics={"explained_variance": 0.9})
    loaded = load_sae(store, "s")
    assert loaded.cfg == sae.cfg and type(loaded) is type(sae)
    x = planted(500, seed=3)
    assert torch.equal(loaded.encode(x), sae.encode(x)) and torch.equal(loaded(x), sae(x))
    assert store.list_saes()[0]["metrics"] == {"explained_variance": 0.9}


def test_loaded_topk_uses_its_saved_k(tmp_path):
    store = Store(tmp_path)
    save_sae(store, "k7", build_sae(SAEConfig("topk", d_in=D, width=WIDTH, k=7)))
    assert ((load_sae(store, "k7").encode(DATA[:100]) > 0).sum(-1) == 7).all()


def test_damaged_weights_are_reported(trained, tmp_path):
    store = Store(tmp_path)
    save_sae(store, "s", trained["topk"].sae)
    path = store.path("saes", "s", "sae.safetensors")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(StoreCorruptError, match="Delete the SAE 's'"):
        load_sae(store, "s")


@pytest.mark.parametrize("arch", ARCHS)
def test_saelens_export_import_round_trip(arch, trained, tmp_path):
    sae = trained[arch].sae
    sae.cfg.layer, sae.cfg.model = "resid_post.2", "demo"
    folder = export_saelens(sae, tmp_path / "lens")
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["d_in"] == D and cfg["d_sae"] == WIDTH and cfg["hook_name"] == "blocks.2.hook_resid_post"
    assert cfg["architecture"] == {"relu": "standard", "topk": "topk"}.get(arch, "jumprelu")
    imported = import_saelens(folder)
    assert imported.cfg.layer == "resid_post.2" and imported.cfg.arch == arch
    x = planted(500, seed=4)
    assert torch.equal(imported.encode(x), sae.encode(x)) and torch.equal(imported(x), sae(x))


def saelens_reference(cfg: dict, weights: dict, x: torch.Tensor) -> torch.Tensor:
    """SAELens's forward pass, written out from its documented formulas."""
    sae_in = x - weights["b_dec"] * cfg.get("apply_b_dec_to_input", True)
    pre = sae_in @ weights["W_enc"] + weights["b_enc"]
    if cfg["architecture"] == "jumprelu":
        f = pre.relu() * (pre > weights["threshold"])
    elif cfg.get("activation_fn_str") == "topk":
        top = pre.topk(cfg["activation_fn_kwargs"]["k"], dim=-1)
        f = torch.zeros_like(pre).scatter_(-1, top.indices, top.values.relu())
    else:
        f = pre.relu()
    return f @ weights["W_dec"] + weights["b_dec"]


@pytest.mark.parametrize("cfg", [
    {"architecture": "standard", "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 5}},  # SAELens 5
    {"architecture": "jumprelu", "apply_b_dec_to_input": False},  # Gemma Scope style
    {"architecture": "standard", "activation_fn_str": "relu"},
])
def test_import_of_foreign_saelens_folders(cfg, tmp_path):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    weights = {"W_enc": torch.randn(D, WIDTH, generator=g), "b_enc": torch.randn(WIDTH, generator=g),
               "W_dec": torch.randn(WIDTH, D, generator=g), "b_dec": torch.randn(D, generator=g)}
    if cfg["architecture"] == "jumprelu":
        weights["threshold"] = torch.rand(WIDTH, generator=g)
    cfg = cfg | {"d_in": D, "d_sae": WIDTH, "dtype": "float32", "hook_name": "blocks.1.hook_resid_post",
                 "model_name": "gpt2"}
    save_file(weights, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    sae = import_saelens(tmp_path)
    x = torch.randn(200, D, generator=g)
    assert torch.allclose(sae(x), saelens_reference(cfg, weights, x), atol=1e-4)
    assert sae.cfg.layer == "resid_post.1" and sae.cfg.model == "gpt2"


def test_unsupported_saelens_folders_are_explained(tmp_path):
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "gated", "d_in": D, "d_sae": WIDTH}))
    export = export_saelens(build_sae(SAEConfig("relu", d_in=D, width=WIDTH)), tmp_path / "ok")
    (tmp_path / "sae_weights.safetensors").write_bytes((export / "sae_weights.safetensors").read_bytes())
    with pytest.raises(SAEConfigError, match="gated"):
        import_saelens(tmp_path)
    with pytest.raises(SAEConfigError, match="cfg.json"):
        import_saelens(tmp_path / "missing")


# ----- building blocks --------------------------------------------------------------------------------


def test_sparse_kernels_match_dense_autograd():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, D, generator=g)
    W_enc = torch.randn(D, WIDTH, generator=g, requires_grad=True)
    b_enc = torch.randn(WIDTH, generator=g, requires_grad=True)
    W_dec = torch.randn(WIDTH, D, generator=g, requires_grad=True)
    x_in = x.clone().requires_grad_()
    codes = SparseCodes.from_topk(topk_indices(x, W_enc, b_enc, 5), WIDTH)
    out = SparseDecode.apply(SparsePreacts.apply(x_in, W_enc, b_enc, codes).relu(), W_dec, codes)
    target = torch.randn(64, D, generator=g)
    (out - target).pow(2).sum().backward()
    sparse_grads = [t.grad.clone() for t in (x_in, W_enc, b_enc, W_dec)]

    for t in (x_in, W_enc, b_enc, W_dec):
        t.grad = None
    pre = x_in @ W_enc + b_enc
    mask = torch.zeros_like(pre, dtype=torch.bool).scatter_(1, codes.col.view(64, 5), True)
    dense = (pre * mask).relu() @ W_dec
    assert torch.allclose(dense, out, atol=1e-4)
    (dense - target).pow(2).sum().backward()
    for sparse, t in zip(sparse_grads, (x_in, W_enc, b_enc, W_dec)):
        assert torch.allclose(sparse, t.grad, atol=1e-3, rtol=1e-4)


def test_batch_topk_pairs_equal_a_flat_topk():
    pre = torch.randn(300, 200, generator=torch.Generator().manual_seed(1))
    row, col = batch_topk_pairs(pre, 1_000)
    flat = pre.flatten().topk(1_000).indices.sort().values
    assert torch.equal(row * 200 + col, flat)


def test_shuffled_batches_use_each_row_once_per_pass():
    data = torch.arange(10_000, dtype=torch.float32)[:, None]
    batches = list(shuffled_batches(iter(data.split(700)), batch_size=100, buffer_tokens=2_000, seed=0))
    seen = torch.cat(batches).flatten()
    assert len(batches) == 100 and torch.equal(seen.sort().values, data.flatten())
    assert not torch.equal(seen, data.flatten())  # actually shuffled


def test_geometric_median_ignores_outliers():
    points = torch.cat([torch.randn(99, 3) * 0.01 + 1.0, torch.full((1, 3), 1_000.0)])
    assert torch.allclose(geometric_median(points), torch.ones(3), atol=0.05)
