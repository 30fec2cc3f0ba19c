"""The shipped demo model: loads with plain transformers and meets its quality targets on a small sample."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from microw_core.demo.corpus import generate_stories
from microw_core.demo.evaluate import (
    perplexity,
    random_init_perplexity,
    topic_coherence,
    unigram_perplexity,
    vocab_rate,
)

MODEL_DIR = Path(__file__).resolve().parents[1] / "microw_core" / "demo" / "model"

pytestmark = pytest.mark.skipif(not (MODEL_DIR / "model.safetensors").exists(),
                                reason=f"demo model not trained yet: run `python -m microw_core.demo.train` "
                                       f"to create {MODEL_DIR}")


@pytest.fixture(scope="module")
def demo():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # one thread: this tiny model's small matmuls get far slower with 2 threads when other jobs share the cores
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32).eval()
    yield model, tokenizer
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def test_texts():
    return [s.text for s in generate_stories(60, "test")]


def test_folder_is_a_small_standard_hf_folder(demo):
    model, tokenizer = demo
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"):
        assert (MODEL_DIR / name).is_file(), name
    assert (MODEL_DIR / "model.safetensors").stat().st_size <= 12_000_000
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 4
    assert model.config.tie_word_embeddings


def test_tokenizer_prepends_bos_and_pads(demo):
    _, tokenizer = demo
    ids = tokenizer("One day Tom")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and tokenizer.decode(ids, skip_special_tokens=True) == "One day Tom"
    assert tokenizer.pad_token is not None and tokenizer.eos_token == "</s>"
    batch = tokenizer(["a", "a longer text"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, -1] == tokenizer.pad_token_id


def test_heldout_perplexity_beats_baselines(demo, test_texts):
    model, tokenizer = demo
    ppl = perplexity(model, tokenizer, test_texts)
    unigram = unigram_perplexity(tokenizer, [s.text for s in generate_stories(1000, "train")], test_texts)
    random_init = random_init_perplexity(model, tokenizer, test_texts[:20])
    assert ppl <= 0.2 * unigram, (ppl, unigram)
    assert ppl <= 0.01 * random_init, (ppl, random_init)


def test_continuations_stay_on_topic_and_in_vocabulary(demo):
    model, tokenizer = demo
    coherence = topic_coherence(model, tokenizer, ["ocean", "space", "castle", "night"], n=5)
    # few samples per topic, so a looser bar than the benchmark's 0.8 per topic
    assert sum(coherence.per_topic.values()) / 4 >= 0.7, coherence.per_topic
    texts = [t for ts in coherence.samples.values() for t in ts]
    assert vocab_rate(texts) >= 0.95, texts
