"""Tiny random-init models of several architectures, built from configs (no download)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import transformers as T
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from microw_core.model import LanguageModel

VOCAB = 96
D = 32
N_LAYERS = 2

CONFIGS = {
    "gpt2": lambda: T.GPT2Config(n_layer=N_LAYERS, n_embd=D, n_head=2, vocab_size=VOCAB, n_positions=128,
                                 bos_token_id=1, eos_token_id=2),
    "llama": lambda: T.LlamaConfig(num_hidden_layers=N_LAYERS, hidden_size=D, num_attention_heads=2,
                                   num_key_value_heads=2, intermediate_size=64, vocab_size=VOCAB, bos_token_id=1, eos_token_id=2),
    "mistral": lambda: T.MistralConfig(num_hidden_layers=N_LAYERS, hidden_size=D, num_attention_heads=2,
                                       num_key_value_heads=1, intermediate_size=64, vocab_size=VOCAB, bos_token_id=1, eos_token_id=2),
    "qwen2": lambda: T.Qwen2Config(num_hidden_layers=N_LAYERS, hidden_size=D, num_attention_heads=2,
                                   num_key_value_heads=1, intermediate_size=64, vocab_size=VOCAB, bos_token_id=1, eos_token_id=2),
    "gemma": lambda: T.GemmaConfig(num_hidden_layers=N_LAYERS, hidden_size=D, num_attention_heads=2, num_key_value_heads=1,
                                   intermediate_size=64, vocab_size=VOCAB, head_dim=16, bos_token_id=1, eos_token_id=2, pad_token_id=0),
    "gpt_neox": lambda: T.GPTNeoXConfig(num_hidden_layers=N_LAYERS, hidden_size=D, num_attention_heads=2,
                                        intermediate_size=64, vocab_size=VOCAB, bos_token_id=1, eos_token_id=2),
    "opt": lambda: T.OPTConfig(num_hidden_layers=N_LAYERS, hidden_size=D, num_attention_heads=2, ffn_dim=64,
                               vocab_size=VOCAB, word_embed_proj_dim=D, bos_token_id=1, eos_token_id=2, pad_token_id=0),
}
ARCHITECTURES = tuple(CONFIGS)


@functools.cache
def char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer over printable ASCII that prepends <s> (like most LMs)."""
    chars = [chr(c) for c in range(32, 32 + VOCAB - 4)]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3} | {c: i + 4 for i, c in enumerate(chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    from tokenizers.processors import TemplateProcessing
    tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    from tokenizers import decoders
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def tiny_model(arch: str, seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    config = CONFIGS[arch]()
    model = T.AutoModelForCausalLM.from_config(config)
    return LanguageModel(model=model, tokenizer=char_tokenizer(), name=f"tiny-{arch}")


def save_tiny_model(arch: str, folder: Path, seed: int = 0) -> Path:
    lm = tiny_model(arch, seed)
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    return folder
