"""Train the demo tokenizer and model on the concept-stories corpus.

    python -m microw_core.demo.train [--tokens N] [--out DIR] [--threads T]

Deterministic for a fixed thread count: seeded data, seeded init, fixed batch order. Output is written to a
temporary folder and moved to ``--out`` only when training has finished, so a half-trained model is never shipped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from microw_core.demo.corpus import generate_stories, topic_prompt

DEFAULT_OUT = Path(__file__).parent / "model"
MAX_MODEL_BYTES = 12_000_000


@dataclass(frozen=True)
class TrainConfig:
    tokens: int = 20_000_000  # training tokens (fresh stories, one pass)
    vocab_size: int = 4096  # an upper bound: BPE stops near 3,430, where every corpus word is a single token
    hidden: int = 192
    layers: int = 4
    heads: int = 3  # head dim 64
    intermediate: int = 512  # 8/3 * hidden
    seq_len: int = 256
    batch: int = 16
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 200
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 1  # 1 thread is as fast as 2 when other jobs share the 2 cores, and leaves them a core
    tokenizer_stories: int = 20_000
    val_stories: int = 1_000
    eval_every: int = 500
    bf16: bool = True  # CPU autocast; AMX makes bf16 matmuls ~1.6x faster than float32 here

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq_len

    @property
    def steps(self) -> int:
        return math.ceil(self.tokens / self.tokens_per_step)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- tokenizer ----------------------------------------------------------------------------------------------------
def train_tokenizer(texts: list[str], vocab_size: int, folder: Path):
    """Byte-level BPE with <s> prepended by the post-processor; saved so AutoTokenizer loads it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                      padding_side="right", model_max_length=1024)
    wrapped.save_pretrained(folder)
    return load_tokenizer(folder)


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("Hello")["input_ids"]
    if ids[0] != tok.bos_token_id or tok.pad_token is None:
        raise RuntimeError(f"tokenizer in {folder} does not prepend BOS or lacks a pad token: {ids}")
    return tok


# ---- data ---------------------------------------------------------------------------------------------------------
def pack(tokenizer, texts: list[str], seq_len: int) -> torch.Tensor:
    """Concatenate <s> story </s> sequences and cut them into [n, seq_len] windows (the tail is dropped)."""
    ids = tokenizer(texts)["input_ids"]
    eos = tokenizer.eos_token_id
    flat = torch.tensor([t for seq in ids for t in (*seq, eos)], dtype=torch.int32)
    n = len(flat) // seq_len
    return flat[: n * seq_len].view(n, seq_len)


def build_data(cfg: TrainConfig, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Training windows from fresh train stories (enough for cfg.tokens) and validation windows."""
    val = pack(tokenizer, [s.text for s in generate_stories(cfg.val_stories, "validation", cfg.seed)], cfg.seq_len)
    sample = [s.text for s in generate_stories(2000, "train", cfg.seed + 1)]
    per_story = sum(len(x) + 1 for x in tokenizer(sample)["input_ids"]) / len(sample)
    n_stories = int(cfg.tokens / per_story * 1.02) + 1000
    log(f"{per_story:.1f} tokens/story; generating {n_stories} train stories")
    texts = [s.text for s in generate_stories(n_stories, "train", cfg.seed)]
    train = pack(tokenizer, texts, cfg.seq_len)
    need = cfg.steps * cfg.batch
    if len(train) < need:
        raise RuntimeError(f"only {len(train)} windows for {need} needed; raise the story estimate")
    gen = torch.Generator().manual_seed(cfg.seed)
    return train[:need][torch.randperm(need, generator=gen)], val


# ---- model --------------------------------------------------------------------------------------------------------
def build_model(cfg: TrainConfig, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        max_position_embeddings=1024, tie_word_embeddings=True, rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio * lr."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.AdamW:
    # no weight decay on norms (1-d weights)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": other, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))


@torch.no_grad()
def evaluate(model, windows: torch.Tensor, cfg: TrainConfig, batch: int = 32) -> float:
    """Mean next-token loss over windows."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        x = windows[i:i + batch].long()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = model(input_ids=x, labels=x).loss
        n = x.numel() - len(x)
        total += loss.float().item() * n
        count += n
    model.train()
    return total / count


def train_steps(model, data: torch.Tensor, val: torch.Tensor, cfg: TrainConfig, steps: int) -> list[dict]:
    opt = make_optimizer(model, cfg)
    model.train()
    history, start, seen = [], time.time(), 0
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        x = data[step * cfg.batch:(step + 1) * cfg.batch].long()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        seen += x.numel()
        if step % 50 == 0 or step == steps - 1:
            elapsed = time.time() - start
            eta = elapsed / (step + 1) * (steps - step - 1)
            log(f"step {step + 1}/{steps} loss {loss.item():.4f} lr {lr_at(step, cfg):.2e} "
                f"{seen / elapsed:.0f} tok/s eta {eta / 60:.1f} min")
        if (step + 1) % cfg.eval_every == 0 or step == steps - 1:
            val_loss = evaluate(model, val, cfg)
            history.append({"step": step + 1, "tokens": seen, "train_loss": loss.item(), "val_loss": val_loss,
                            "elapsed_s": time.time() - start})
            log(f"eval step {step + 1}: held-out loss {val_loss:.4f} (ppl {math.exp(val_loss):.2f})")
    return history


# ---- saving -------------------------------------------------------------------------------------------------------
def save_model(model, folder: Path) -> str:
    """float32 when it fits the size budget, else float16."""
    n_bytes = sum(p.numel() for p in model.parameters()) * 4
    dtype = torch.float32 if n_bytes <= MAX_MODEL_BYTES else torch.float16
    model.to(dtype).save_pretrained(folder)
    size = (folder / "model.safetensors").stat().st_size
    if size > MAX_MODEL_BYTES:
        raise RuntimeError(f"model.safetensors is {size} bytes, over the {MAX_MODEL_BYTES} budget")
    return str(dtype).removeprefix("torch.")


def sample_stories(model, tokenizer, topics: list[str], seed: int = 0) -> list[str]:
    model = model.float().eval()
    torch.manual_seed(seed)
    out = []
    for topic in topics:
        ids = tokenizer(topic_prompt(topic), return_tensors="pt")
        gen = model.generate(**ids, max_new_tokens=60, do_sample=True, temperature=1.0, top_k=0,
                             pad_token_id=tokenizer.pad_token_id)
        out.append(tokenizer.decode(gen[0], skip_special_tokens=True))
    return out


MODEL_CARD = """\
---
license: mit
language: en
library_name: transformers
tags: [microw, demo, sparse-autoencoders, interpretability]
---
# microw demo model

A tiny Llama-architecture language model trained from scratch on microw's synthetic **concept-stories** corpus
(`microw_core/demo/corpus.py`): short English stories over {n_topics} topics with planted, character-level
labels for topics, word classes and sentence structures. It is the built-in model that microw's tests,
benchmarks and tutorials use to check that SAE features and steering recover the planted concepts.

| | |
|---|---|
| Architecture | LlamaForCausalLM, {layers} layers, hidden {hidden}, {heads} heads, MLP {intermediate}, tied embeddings |
| Parameters | {params:,} |
| Weights | `model.safetensors`, {dtype} |
| Tokenizer | byte-level BPE, {vocab} tokens, `<s>` prepended to every text, `</s>` between stories, `<pad>` |
| Training data | {train_tokens:,} tokens of fresh `train`-split stories (seed {seed}), windows of {seq_len} tokens |
| Optimiser | AdamW (betas 0.9/0.95, weight decay {wd}), peak lr {lr}, {warmup} warm-up steps, cosine decay, batch {batch} |
| Training time | {minutes:.1f} min wall clock, {threads} CPU thread(s), bf16 autocast {bf16} (data generation included) |
| Held-out loss | {val_loss:.4f} nats/token on the validation split (perplexity {val_ppl:.2f}) |

Reproduce (deterministic for the same thread count):

```
python -m microw_core.demo.train --tokens {tokens} --threads {threads}
```

Acceptance figures (held-out perplexity against unigram and random-init baselines, topic coherence of sampled
continuations, vocabulary rate): `python benchmarks/demo_model.py`.

Limitations: the model only knows the corpus' ~1,700-word vocabulary and story templates; it is a test
instrument, not a general language model.
"""


def write_card(folder: Path, cfg: TrainConfig, model, history: list[dict], minutes: float, dtype: str) -> None:
    val_loss = history[-1]["val_loss"]
    text = MODEL_CARD.format(
        n_topics=16, layers=cfg.layers, hidden=cfg.hidden, heads=cfg.heads, intermediate=cfg.intermediate,
        params=sum(p.numel() for p in model.parameters()), dtype=dtype, vocab=model.config.vocab_size,
        train_tokens=cfg.steps * cfg.tokens_per_step, seed=cfg.seed, seq_len=cfg.seq_len, wd=cfg.weight_decay,
        lr=cfg.lr, warmup=cfg.warmup, batch=cfg.batch, minutes=minutes, threads=cfg.threads, bf16=cfg.bf16,
        val_loss=val_loss, val_ppl=math.exp(val_loss), tokens=cfg.tokens)
    (folder / "README.md").write_text(text)
    (folder / "training.json").write_text(json.dumps(
        {"config": asdict(cfg), "history": history, "minutes": minutes}, indent=2))


# ---- entry point --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=TrainConfig.tokens)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--threads", type=int, default=TrainConfig.threads)
    p.add_argument("--hidden", type=int, default=TrainConfig.hidden)
    p.add_argument("--intermediate", type=int, default=TrainConfig.intermediate)
    p.add_argument("--heads", type=int, default=TrainConfig.heads)
    p.add_argument("--seq-len", type=int, default=TrainConfig.seq_len)
    p.add_argument("--batch", type=int, default=TrainConfig.batch)
    p.add_argument("--vocab-size", type=int, default=TrainConfig.vocab_size)
    p.add_argument("--bench-steps", type=int, default=0, help="only time this many steps, save nothing")
    args = p.parse_args(argv)
    cfg = TrainConfig(tokens=args.tokens, threads=args.threads, hidden=args.hidden, intermediate=args.intermediate,
                      heads=args.heads, seq_len=args.seq_len, batch=args.batch, vocab_size=args.vocab_size)
    torch.set_num_threads(cfg.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizer threads would fight the trainer
    log(f"config {asdict(cfg)}; {cfg.steps} steps")

    out = args.out.resolve()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    start = time.time()
    tokenizer = train_tokenizer(
        [s.text for s in generate_stories(cfg.tokenizer_stories, "train", cfg.seed + 2)], cfg.vocab_size, tmp)
    log(f"tokenizer: {len(tokenizer)} tokens ({time.time() - start:.0f}s)")

    if args.bench_steps:
        cfg = TrainConfig(**{**asdict(cfg), "tokens": args.bench_steps * cfg.tokens_per_step})
        data = pack(tokenizer, [s.text for s in generate_stories(
            args.bench_steps * cfg.tokens_per_step // 60, "train", cfg.seed)], cfg.seq_len)
        model = build_model(cfg, tokenizer)
        log(f"bench: {sum(p.numel() for p in model.parameters()):,} params")
        train_steps(model, data, data[:8], cfg, args.bench_steps)
        shutil.rmtree(tmp)
        return

    train, val = build_data(cfg, tokenizer)
    log(f"data: {train.numel():,} train tokens, {val.numel():,} validation tokens ({time.time() - start:.0f}s)")
    model = build_model(cfg, tokenizer)
    log(f"model: {sum(p.numel() for p in model.parameters()):,} params; "
        f"initial held-out loss {evaluate(model, val, cfg):.4f}")
    history = train_steps(model, train, val, cfg, cfg.steps)
    minutes = (time.time() - start) / 60

    for text in sample_stories(model, tokenizer, ["ocean", "space", "castle", "night"]):
        log(f"sample: {text}")
    dtype = save_model(model, tmp)
    write_card(tmp, cfg, model, history, minutes, dtype)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    log(f"saved {out} ({dtype}); held-out loss {history[-1]['val_loss']:.4f}; {minutes:.1f} min")


if __name__ == "__main__":
    sys.exit(main())
