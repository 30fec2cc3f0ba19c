"""Capture on tiny random-init models: real forward passes, real shard files, real subprocesses."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from microw_core.capture import CaptureConfig, capture, open_run
from microw_core.cli import main as cli_main
from microw_core.datasets import tokenize_windows
from microw_core.errors import LayerNotFoundError, StoreCorruptError, StoreError
from microw_core.hooks import ActivationRecorder
from microw_core.model import load_model
from microw_core.store import Store
from tiny_models import ARCHITECTURES, save_tiny_model, tiny_model

REPO = Path(__file__).resolve().parent.parent
MAX_LENGTH = 40
LAYERS = ["resid_pre.0", "resid_post.0", "attn_out.1", "mlp_out.1", "resid_post.1"]
ALPHABET = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ0123456789.,!?'"


def make_texts(n: int, seed: int = 0, longest: int = 60) -> list[str]:
    """Texts of varied length (some longer than MAX_LENGTH, so truncation happens); no edge spaces."""
    rng = random.Random(seed)
    return ["x" + "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, longest))) + "." for _ in range(n)]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def direct(lm, text: str, layers: list[str]) -> tuple[list[int], dict[str, torch.Tensor]]:
    """Token ids of `text` and each layer's activations [seq, d] from a plain, unpadded forward."""
    batch = lm.tokenize([text], max_length=MAX_LENGTH)
    recorders = [ActivationRecorder(layer) for layer in layers]
    with lm.hooks(*recorders):
        lm.forward(**batch)
    return batch["input_ids"][0].tolist(), {r.layer: r.last[0] for r in recorders}


def rows_of(meta: dict[str, torch.Tensor], doc: int) -> torch.Tensor:
    """Row indices of document `doc`, in position order."""
    rows = torch.nonzero(meta["doc_index"] == doc).flatten()
    return rows[torch.argsort(meta["position"][rows])]


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


@pytest.fixture
def dataset(tmp_path):
    texts = make_texts(30)
    return texts, write_jsonl(tmp_path / "texts.jsonl", texts)


# ----- activations and their token mapping ------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_activations_equal_direct_forward(arch, tmp_path, dataset):
    lm = tiny_model(arch)
    texts, path = dataset
    store = Store(tmp_path / "store")
    # Small batches, shards and sort windows: padding, several shards and length sorting all happen.
    config = CaptureConfig(layers=LAYERS, batch_size=4, max_length=MAX_LENGTH, shard_tokens=100, sort_window=3)
    result = capture(lm, str(path), config, store, run="r")
    run = open_run(store, "r")
    assert len(run.manifest["shards"]) > 3 and result["complete"]
    meta = run.meta()
    acts = {layer: run.load(layer) for layer in LAYERS}
    assert run.texts() == texts
    expected_tokens = 0
    for doc, text in enumerate(run.texts()):
        ids, reference = direct(lm, text, LAYERS)
        rows = rows_of(meta, doc)
        # BOS (position 0) is left out by default; every other real token is there once, padding never.
        assert meta["position"][rows].tolist() == list(range(1, len(ids)))
        assert meta["token_ids"][rows].tolist() == ids[1:]
        assert not meta["special"][rows].any()
        for layer in LAYERS:
            torch.testing.assert_close(acts[layer][rows], reference[layer][1:].float(), rtol=0, atol=1e-5,
                                       msg=lambda m: f"{arch} {layer} doc {doc}: {m}")
        expected_tokens += len(ids) - 1
    assert run.tokens == result["tokens"] == expected_tokens == len(meta["token_ids"])
    assert all(acts[layer].shape == (expected_tokens, lm.d_model) for layer in LAYERS)
    assert run.d_model("mlp_out.1") == lm.d_model


def test_keep_special_stores_bos_flagged(llama, tmp_path, dataset):
    texts, path = dataset
    store = Store(tmp_path / "store")
    capture(llama, str(path), CaptureConfig(layers=["resid_post.0"], keep_special=True, max_length=MAX_LENGTH), store, run="r")
    run = open_run(store, "r")
    meta, acts = run.meta(), run.load("resid_post.0")
    bos = llama.tokenizer.bos_token_id
    for doc, text in enumerate(texts):
        ids, reference = direct(llama, text, ["resid_post.0"])
        rows = rows_of(meta, doc)
        assert meta["position"][rows].tolist() == list(range(len(ids)))
        assert meta["token_ids"][rows].tolist() == ids and ids[0] == bos
        assert meta["special"][rows].tolist() == [True] + [False] * (len(ids) - 1)
        torch.testing.assert_close(acts[rows], reference["resid_post.0"], rtol=0, atol=1e-5)


def test_packed_windows_map_back_to_their_texts(llama, tmp_path, dataset):
    texts, path = dataset
    store = Store(tmp_path / "store")
    config = CaptureConfig(layers=["resid_post.1"], pack=True, max_length=16, keep_special=True, batch_size=4)
    capture(llama, str(path), config, store, run="r")
    run = open_run(store, "r")
    meta, acts = run.meta(), run.load("resid_post.1")
    # One sort window holds every window here, so rows come in (stable) length order.
    windows = sorted(tokenize_windows(texts, llama.tokenizer, max_length=16, pack=True), key=lambda w: len(w.input_ids))
    stored = list(zip(meta["token_ids"].tolist(), meta["doc_index"].tolist(), meta["position"].tolist()))
    assert stored == [row for w in windows for row in zip(w.input_ids, w.doc_index, w.position)]
    eos = llama.tokenizer.eos_token_id
    for token, doc, position in stored:  # position -1 is the BOS added at a window start
        assert position == -1 or (llama.tokenizer(texts[doc])["input_ids"] + [eos])[position] == token
    start = 0
    for window in windows:
        with llama.hooks(recorder := ActivationRecorder("resid_post.1")):
            llama.forward(input_ids=torch.tensor([window.input_ids]))
        n = len(window.input_ids)
        torch.testing.assert_close(acts[start : start + n], recorder.last[0], rtol=0, atol=1e-5)
        start += n


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_storage(llama, tmp_path, dataset, dtype):
    _, path = dataset
    store = Store(tmp_path / "store")
    layers = ["resid_post.0", "mlp_out.1"]
    capture(llama, str(path), CaptureConfig(layers=layers, max_length=MAX_LENGTH), store, run="full")
    capture(llama, str(path), CaptureConfig(layers=layers, max_length=MAX_LENGTH, dtype=dtype), store, run="half")
    full, half = open_run(store, "full"), open_run(store, "half")
    for layer in layers:
        record = half.manifest["shards"][0]["files"][layer]
        assert store.read_tensors(record["path"])["activations"].dtype == getattr(torch, dtype)
        loaded = half.load(layer)
        assert loaded.dtype == torch.float32  # readers always get float32
        assert torch.equal(loaded, full.load(layer).to(getattr(torch, dtype)).float())
    assert half.manifest["dtype"] == dtype


# ----- resume after a kill ---------------------------------------------------------------------

CHILD = """
import sys
from microw_core.capture import CaptureConfig, capture
from microw_core.model import load_model
from microw_core.store import Store

model, dataset, store, run = sys.argv[1:]
capture(load_model(model, device="cpu"), dataset, CaptureConfig(**{config}), Store(store), run=run)
"""
RESUME_CONFIG = dict(layers=["resid_post.0", "mlp_out.1"], batch_size=4, shard_tokens=96, sort_window=4,
                     max_length=MAX_LENGTH, max_tokens=9000)


def test_killed_capture_resumes_to_identical_run(tmp_path):
    model = str(save_tiny_model("llama", tmp_path / "model"))
    dataset = str(write_jsonl(tmp_path / "texts.jsonl", make_texts(600, seed=1)))
    store = Store(tmp_path / "store")
    manifest_path = store.root / "runs" / "r" / "manifest.json"
    script = tmp_path / "child.py"
    script.write_text(CHILD.replace("{config}", repr(RESUME_CONFIG)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": str(torch.get_num_threads())}  # same numerics as this process
    child = subprocess.Popen([sys.executable, str(script), model, dataset, str(store.root), "r"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            if manifest_path.exists() and len(json.loads(manifest_path.read_text())["shards"]) >= 3:
                break
            time.sleep(0.01)
        assert child.poll() is None, f"the capture ended before it could be killed: {child.stderr.read().decode()}"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
    killed = json.loads(manifest_path.read_text())
    assert not killed["complete"] and 3 <= len(killed["shards"]) and killed["tokens"] < RESUME_CONFIG["max_tokens"]

    lm = load_model(model, device="cpu")
    resumed = capture(lm, dataset, CaptureConfig(**RESUME_CONFIG), store, run="r")
    reference = capture(lm, dataset, CaptureConfig(**RESUME_CONFIG), store, run="ref")
    assert resumed["complete"] and resumed["tokens"] == reference["tokens"] == RESUME_CONFIG["max_tokens"]
    run, ref = open_run(store, "r"), open_run(store, "ref")
    assert [s["tokens"] for s in run.manifest["shards"]] == [s["tokens"] for s in ref.manifest["shards"]]
    for layer in RESUME_CONFIG["layers"]:
        assert torch.equal(run.load(layer), ref.load(layer)), layer
    meta, ref_meta = run.meta(), ref.meta()
    assert meta.keys() == ref_meta.keys()
    assert all(torch.equal(meta[k], ref_meta[k]) for k in meta)
    assert run.texts() == ref.texts()
    pairs = set(zip(meta["doc_index"].tolist(), meta["position"].tolist()))
    assert len(pairs) == run.tokens  # no token stored twice


# ----- damaged files ---------------------------------------------------------------------------


def test_damaged_shards_raise_store_corrupt(llama, tmp_path, dataset):
    _, path = dataset
    store = Store(tmp_path / "store")
    capture(llama, str(path), CaptureConfig(layers=["resid_post.0", "resid_post.1"], batch_size=4, shard_tokens=200), store, run="r")
    run = open_run(store, "r")
    shards = run.manifest["shards"]
    assert len(shards) >= 3

    flipped = store.root / shards[0]["files"]["resid_post.0"]["path"]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one bit flip inside the tensor data
    flipped.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match=r"(?s)00000\.resid_post\.0\.safetensors.*checksum.*Delete the run 'r'"):
        run.load("resid_post.0")

    truncated = store.root / shards[1]["files"]["meta"]["path"]
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(StoreCorruptError, match=r"00001\.meta\.safetensors"):
        run.meta()

    (store.root / shards[2]["files"]["resid_post.1"]["path"]).unlink()
    with pytest.raises(StoreCorruptError, match="missing"):
        list(run.iter_shards("resid_post.1"))

    texts = store.root / shards[0]["files"]["texts"]["path"]
    texts.write_text("garbage\n")
    with pytest.raises(StoreCorruptError):
        run.texts()


# ----- early stop, limits, refusals ------------------------------------------------------------


@pytest.mark.parametrize("layers", [["resid_post.0"], ["attn_out.1", "mlp_out.1"], ["resid_pre.1", "embed"]])
def test_early_stop_gives_same_activations_and_skips_deeper_blocks(llama, tmp_path, dataset, layers):
    _, path = dataset
    store = Store(tmp_path / "store")
    runs = {}
    for early_stop in (True, False):
        deeper = ActivationRecorder("final_norm")  # counts forwards that got past the captured layers
        with llama.hooks(deeper):  # the model lock is re-entrant: capture adds its hooks inside
            capture(llama, str(path), CaptureConfig(layers=layers, early_stop=early_stop), store, run=f"{early_stop}")
        assert (len(deeper.activations) == 0) == early_stop
        runs[early_stop] = open_run(store, f"{early_stop}")
    for layer in layers:
        assert torch.equal(runs[True].load(layer), runs[False].load(layer))


def test_unread_logits_are_skipped_but_a_captured_unembedding_is_whole(llama, tmp_path, dataset):
    _, path = dataset
    store = Store(tmp_path / "store")
    logits = ActivationRecorder("lm_head")
    with llama.hooks(logits):  # every block runs, but nothing captured reads the logits
        capture(llama, str(path), CaptureConfig(layers=["resid_post.1"], early_stop=False), store, run="blocks")
    assert logits.activations and all(a.shape[1] == 1 for a in logits.activations)  # last position only
    capture(llama, str(path), CaptureConfig(layers=["lm_head"], max_length=MAX_LENGTH), store, run="logits")
    run = open_run(store, "logits")
    meta, acts = run.meta(), run.load("lm_head")
    assert acts.shape == (run.tokens, llama.vocab_size)
    for doc, text in enumerate(run.texts()[:5]):
        ids, reference = direct(llama, text, ["lm_head"])
        torch.testing.assert_close(acts[rows_of(meta, doc)], reference["lm_head"][1:].float(), rtol=0, atol=1e-5)


def test_max_tokens_is_exact(llama, tmp_path, dataset):
    _, path = dataset
    store = Store(tmp_path / "store")
    capture(llama, str(path), CaptureConfig(layers=["resid_post.0"], shard_tokens=50), store, run="all")
    result = capture(llama, str(path), CaptureConfig(layers=["resid_post.0"], max_tokens=137, shard_tokens=50),
                     store, run="some")
    run, full = open_run(store, "some"), open_run(store, "all")
    assert result["tokens"] == run.tokens == 137 and result["complete"]
    assert run.load("resid_post.0").shape[0] == 137 and all(len(v) == 137 for v in run.meta().values())
    assert torch.equal(run.load("resid_post.0"), full.load("resid_post.0")[:137])
    assert torch.equal(run.load("resid_post.0", max_tokens=60), full.load("resid_post.0")[:60])


def test_complete_run_is_refused(llama, tmp_path, dataset):
    _, path = dataset
    store = Store(tmp_path / "store")
    config = CaptureConfig(layers=["resid_post.0"])
    capture(llama, str(path), config, store, run="r")
    with pytest.raises(StoreError, match="already exists and is complete"):
        capture(llama, str(path), config, store, run="r")


def test_unknown_layer_fails_before_any_work(llama, tmp_path):
    store = Store(tmp_path / "store")
    # The dataset does not exist: reading it would raise DatasetError, so this proves nothing was read.
    with pytest.raises(LayerNotFoundError, match="resid_post.7"):
        capture(llama, str(tmp_path / "missing.jsonl"), CaptureConfig(layers=["resid_post.0", "resid_post.7"]), store)
    assert not store.root.exists()


# ----- dataset formats ---------------------------------------------------------------------------

FORMATS = ["txt", "jsonl", "json", "csv", "tsv", "parquet", "disk"]


def write_dataset(folder: Path, kind: str, texts: list[str]) -> Path:
    frame = pd.DataFrame({"id": range(len(texts)), "text": texts})
    path = folder / (f"data.{kind}" if kind != "disk" else "data")
    if kind == "txt":
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    elif kind == "jsonl":
        write_jsonl(path, texts)
    elif kind == "json":
        path.write_text(json.dumps([{"text": t} for t in texts]), encoding="utf-8")
    elif kind in ("csv", "tsv"):
        frame.to_csv(path, index=False, sep="," if kind == "csv" else "\t")
    elif kind == "parquet":
        frame.to_parquet(path, index=False)
    else:
        import datasets

        datasets.Dataset.from_pandas(frame).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("kind", FORMATS)
def test_every_dataset_format_captures(llama, tmp_path, kind):
    texts = make_texts(12, seed=2) + ['with "quotes", commas; and more']
    path = write_dataset(tmp_path, kind, texts)
    store = Store(tmp_path / "store")
    capture(llama, str(path), CaptureConfig(layers=["resid_post.0"], max_length=MAX_LENGTH), store, run="r")
    run = open_run(store, "r")
    assert run.texts() == texts
    ids = llama.tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    meta = run.meta()
    for doc, doc_ids in enumerate(ids):
        assert meta["token_ids"][rows_of(meta, doc)].tolist() == doc_ids[1:]
    assert run.tokens == sum(len(i) - 1 for i in ids)


# ----- command line --------------------------------------------------------------------------------


def test_cli_capture_and_runs(tmp_path, dataset, capsys):
    texts, path = dataset
    model = save_tiny_model("gpt2", tmp_path / "model")
    store = tmp_path / "store"
    out = subprocess.run(
        [sys.executable, "-m", "microw_core.cli", "capture", "--model", str(model), "--dataset", str(path),
         "--layers", "resid_post.0", "resid_post.1", "--store", str(store), "--run", "r", "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"run", "tokens", "layers", "tokens_per_s", "bytes"} <= set(result)
    assert result["run"] == "r" and result["layers"] == ["resid_post.0", "resid_post.1"]
    assert result["tokens"] == open_run(Store(store), "r").tokens > 0 and result["bytes"] > 0

    assert cli_main(["runs", "--store", str(store), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"]
    assert [(r["name"], r["tokens"], r["complete"], r["layers"]) for r in listed] == [
        ("r", result["tokens"], True, ["resid_post.0", "resid_post.1"])]
