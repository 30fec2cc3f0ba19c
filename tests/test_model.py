"""Model loading, generation and the `layers` / `generate` commands on real tiny models."""

import json
import subprocess
import sys

import pytest
import torch
import transformers as T

from microw_core.errors import ModelLoadError
from microw_core.model import generate, load_model
from tiny_models import ARCHITECTURES, save_tiny_model


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    return save_tiny_model("llama", tmp_path_factory.mktemp("llama"))


def test_load_local_folder_and_generate(llama_folder):
    lm = load_model(str(llama_folder), device="cpu")
    assert lm.d_model == 32 and lm.n_layers == 2 and not lm.model.training
    greedy = generate(lm, "abc", max_new_tokens=6)
    assert greedy == generate(lm, "abc", max_new_tokens=6)
    assert 1 <= len(greedy.token_ids) <= 6
    sampled = [generate(lm, "abc", max_new_tokens=8, temperature=1.0, seed=s).token_ids for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] and sampled[0] != sampled[2]


def test_stop_string_cuts_the_text(llama_folder):
    lm = load_model(str(llama_folder), device="cpu")
    full = generate(lm, "abc", max_new_tokens=12)
    marker = full.text[3:5]
    if marker:
        cut = generate(lm, "abc", max_new_tokens=12, stop=[marker])
        assert marker not in cut.text or cut.text.index(marker) >= 3


def test_dtype_choice(llama_folder):
    lm = load_model(str(llama_folder), device="cpu", dtype="bfloat16")
    assert next(lm.model.parameters()).dtype == torch.bfloat16


def test_unknown_hub_id_offline_names_the_id():
    with pytest.raises(ModelLoadError, match="no-such-org/no-such-model.*demo"):
        load_model("no-such-org/no-such-model")


def test_missing_local_folder():
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model("./definitely/not/here")


def test_pad_token_added_when_missing(tmp_path):
    folder = save_tiny_model("gpt2", tmp_path / "gpt2")
    tok = T.AutoTokenizer.from_pretrained(folder)
    tok.pad_token = None
    tok.save_pretrained(folder)
    lm = load_model(str(folder), device="cpu")
    assert lm.tokenizer.pad_token is not None
    batch = lm.tokenize(["a", "abcdef"])
    assert batch["input_ids"].shape == batch["attention_mask"].shape


def run_cli(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "microw_core.cli", *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_cli_layers_lists_aliases_with_shapes(arch, tmp_path):
    folder = save_tiny_model(arch, tmp_path / arch)
    out = run_cli("layers", "--model", str(folder), "--json")
    assert out["n_layers"] == 2
    for name in ("embed", "resid_pre.0", "resid_post.1", "attn_out.1", "mlp_out.1", "final_norm"):
        assert out["aliases"][name]["shape"][-1] == 32, name


def test_cli_generate_and_error(llama_folder):
    out = run_cli("generate", "--model", str(llama_folder), "--prompt", "abc", "--max-new-tokens", "4", "--json")
    assert set(out) >= {"text", "token_ids"} and len(out["token_ids"]) <= 4
    proc = subprocess.run([sys.executable, "-m", "microw_core.cli", "layers", "--model", "nope/nope", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "nope/nope" in json.loads(proc.stdout.strip().splitlines()[-1])["error"]
