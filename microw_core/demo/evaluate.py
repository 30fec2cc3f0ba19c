"""Acceptance figures for the demo model: held-out perplexity against baselines, topic coherence, vocabulary rate.

Plain transformers objects (model, tokenizer) so this works before and apart from microw's own loader.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from microw_core.demo.corpus import TOPICS, classify_topic, generate_stories, topic_prompt, vocabulary

_WORD = re.compile(r"[A-Za-z]+(?:[-'][A-Za-z]+)*")


def story_token_ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """<s> story </s>, exactly as in training."""
    return [ids + [tokenizer.eos_token_id] for ids in tokenizer(list(texts))["input_ids"]]


@torch.no_grad()
def perplexity(model, tokenizer, texts: Sequence[str], batch: int = 32) -> float:
    """Per-token perplexity of every token after <s> (the closing </s> included)."""
    ids = story_token_ids(tokenizer, texts)
    nll, count = 0.0, 0
    model.eval()
    for i in range(0, len(ids), batch):
        chunk = ids[i:i + batch]
        width = max(map(len, chunk))
        x = torch.full((len(chunk), width), tokenizer.pad_token_id)
        mask = torch.zeros_like(x)
        for row, seq in enumerate(chunk):
            x[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        logits = model(input_ids=x, attention_mask=mask).logits[:, :-1].float()
        target, keep = x[:, 1:], mask[:, 1:].bool()
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        nll += losses[keep].sum().item()
        count += keep.sum().item()
    return math.exp(nll / count)


def unigram_perplexity(tokenizer, train_texts: Sequence[str], test_texts: Sequence[str]) -> float:
    """Perplexity of an add-one-smoothed unigram model fitted on train tokens, over the same targets as perplexity()."""
    counts = Counter(t for ids in story_token_ids(tokenizer, train_texts) for t in ids[1:])
    total, vocab = sum(counts.values()), len(tokenizer)
    targets = [t for ids in story_token_ids(tokenizer, test_texts) for t in ids[1:]]
    nll = -sum(math.log((counts[t] + 1) / (total + vocab)) for t in targets)
    return math.exp(nll / len(targets))


def random_init_perplexity(model, tokenizer, texts: Sequence[str], seed: int = 0) -> float:
    """Perplexity of the same architecture with fresh random weights."""
    torch.manual_seed(seed)
    fresh = type(model)(model.config).to(dtype=next(model.parameters()).dtype)
    return perplexity(fresh, tokenizer, texts)


@torch.no_grad()
def sample_continuations(model, tokenizer, prompt: str, n: int, max_new_tokens: int = 60,
                         temperature: float = 1.0, seed: int = 0) -> list[str]:
    """n sampled continuations (continuation text only) of one prompt."""
    torch.manual_seed(seed)
    inputs = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**inputs, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                         max_new_tokens=max_new_tokens, num_return_sequences=n,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


@dataclass
class Coherence:
    per_topic: dict[str, float]  # share of continuations classified as the prompt's topic
    samples: dict[str, list[str]]

    @property
    def minimum(self) -> float:
        return min(self.per_topic.values())


def topic_coherence(model, tokenizer, topics: Sequence[str] = TOPICS, n: int = 20, seed: int = 0,
                    max_new_tokens: int = 60) -> Coherence:
    per_topic, samples = {}, {}
    for i, topic in enumerate(topics):
        texts = sample_continuations(model, tokenizer, topic_prompt(topic), n, max_new_tokens, seed=seed + i)
        per_topic[topic] = sum(classify_topic(t) == topic for t in texts) / n
        samples[topic] = texts
    return Coherence(per_topic, samples)


def vocab_rate(texts: Sequence[str]) -> float:
    """Share of generated words that are corpus vocabulary; a continuation's last word may be cut off, so it is skipped."""
    vocab = vocabulary()
    words = [w.lower() for t in texts for w in _WORD.findall(t)[:-1]]
    return sum(w in vocab for w in words) / max(1, len(words))


def acceptance(model, tokenizer, test_stories: int = 500, unigram_train_stories: int = 5000,
               samples_per_topic: int = 20, topics: Sequence[str] = TOPICS,
               seed: int = 0) -> tuple[dict, dict[str, list[str]]]:
    """Every acceptance figure in one JSON-ready dict, and the sampled continuations per topic."""
    test = [s.text for s in generate_stories(test_stories, "test", seed)]
    train = [s.text for s in generate_stories(unigram_train_stories, "train", seed)]
    ppl = perplexity(model, tokenizer, test)
    uni = unigram_perplexity(tokenizer, train, test)
    rnd = random_init_perplexity(model, tokenizer, test)
    coh = topic_coherence(model, tokenizer, topics, samples_per_topic, seed)
    figures = {
        "ppl": ppl, "unigram_ppl": uni, "random_ppl": rnd,
        "ppl_ratio_unigram": ppl / uni, "ppl_ratio_random": ppl / rnd,
        "topic_coherence": coh.per_topic, "min_topic_coherence": coh.minimum,
        "vocab_rate": vocab_rate([t for texts in coh.samples.values() for t in texts]),
        "test_stories": test_stories, "samples_per_topic": samples_per_topic,
    }
    return figures, coh.samples
