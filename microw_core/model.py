"""Loading a causal LM and running it safely with hooks.

`load_model` accepts `demo` (the model shipped inside the package), a local folder, or a hub id.
All product code runs the model through `LanguageModel.forward` / `generate`, which hold the
model's lock, so two users of one cached model (two browser tabs) never see each other's hooks.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .errors import InvalidInputError, ModelLoadError
from .hooks import Hook, HookHandle, HookSet, StopForward, attach
from .hooks.manager import track_forward_inputs
from .layers import LayerInfo, LayerRef, layer_catalogue, resolve_layer

DEMO_MODEL_DIR = Path(__file__).parent / "demo" / "model"


def model_path(name: str) -> str:
    """`demo` -> the packaged folder; anything else unchanged."""
    return str(DEMO_MODEL_DIR) if name == "demo" else name


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError(f"Device '{device}' was asked for but CUDA is not available; use --device cpu or auto.")
    if device == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError("Device 'mps' was asked for but MPS is not available; use --device cpu or auto.")
    return torch.device(device)


def pick_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        # bf16 halves memory on GPUs; CPUs are fastest and exact in float32.
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in table:
        raise InvalidInputError(f"Unknown dtype '{dtype}'; use one of auto, {', '.join(table)}.")
    return table[dtype]


@dataclass
class Generation:
    prompt: str
    text: str               # the continuation only
    token_ids: list[int]    # ids of the continuation


@dataclass
class LanguageModel:
    """A causal LM, its tokenizer, and the lock that guards its hooks."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self):
        self.model.eval()
        track_forward_inputs(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def d_model(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    @property
    def n_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def vocab_size(self) -> int:
        return self.model.get_output_embeddings().weight.shape[0]

    @property
    def special_token_ids(self) -> set[int]:
        return set(self.tokenizer.all_special_ids)

    def layer(self, name: str) -> LayerRef:
        return resolve_layer(self.model, name)

    def tokenize(self, texts: list[str], max_length: int | None = None, padding_side: str = "right"):
        if isinstance(texts, str):
            texts = [texts]
        self.tokenizer.padding_side = padding_side
        batch = self.tokenizer(
            list(texts), return_tensors="pt", padding=True,
            truncation=max_length is not None, max_length=max_length,
        )
        return batch.to(self.device)

    def hooks(self, *hooks: Hook) -> HookSet:
        """`with lm.hooks(h1, h2): ...` attaches in order, holds the model lock, always removes."""
        return HookSet(self.model, self.lock, hooks)

    def register(self, hook: Hook) -> HookHandle:
        """Attach one hook until `.remove()` (no lock held: prefer `hooks()` in shared settings)."""
        return attach(self.model, hook)

    def forward(self, **batch):
        """The model's output under no_grad and the lock; None if a detector stopped it early."""
        with self.lock, torch.no_grad():
            try:
                return self.model(**batch)
            except StopForward:
                return None

    def catalogue(self) -> list[LayerInfo]:
        with self.lock:
            return layer_catalogue(self.model, dict(self.tokenize(["Hello world"])))


def load_model(
    name: str = "demo",
    device: str = "auto",
    dtype: str | torch.dtype = "auto",
    trust_remote_code: bool = False,
    device_map: str | dict | None = None,
) -> LanguageModel:
    """Load `demo`, a local folder, or a hub id (downloaded only for a hub id)."""
    path = model_path(name)
    if name == "demo" and not (DEMO_MODEL_DIR / "config.json").exists():
        raise ModelLoadError(
            f"The demo model is missing from {DEMO_MODEL_DIR}; reinstall microw, or rebuild it with "
            "`python -m microw_core.demo.train`."
        )
    looks_local = os.path.sep in path or path.startswith(".") or Path(path).exists()
    if looks_local and not Path(path).is_dir():
        raise ModelLoadError(f"Model folder '{path}' does not exist; pass an existing folder, a hub id, or 'demo'.")
    target = pick_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=pick_dtype(dtype, target), trust_remote_code=trust_remote_code, device_map=device_map
        )
    except (OSError, ValueError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        where = "the hub is switched off (HF_HUB_OFFLINE=1)" if offline else "it is not on the hub or the hub is unreachable"
        raise ModelLoadError(
            f"Could not load model '{name}': not a local model folder, and {where}. "
            f"Check the id or path, download it first with network access, or use 'demo'. ({type(err).__name__}: {err})"
        ) from err
    if device_map is None:
        model.to(target)
    _ensure_pad_token(tokenizer, model)
    return LanguageModel(model=model, tokenizer=tokenizer, name=name)


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
    """Padding needs a pad token; reuse EOS (no new embedding), else add one and grow the embeddings."""
    if tokenizer.pad_token is not None:
        return
    if tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    else:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
        model.resize_token_embeddings(len(tokenizer))


def generate(
    lm: LanguageModel,
    prompt: str,
    max_new_tokens: int = 40,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    stop: list[str] | None = None,
    hooks: tuple[Hook, ...] = (),
) -> Generation:
    """Greedy (temperature 0) or sampled continuation of `prompt`, cut at the first stop string."""
    if max_new_tokens < 1:
        raise InvalidInputError("max_new_tokens must be at least 1.")
    batch = lm.tokenize([prompt])
    options = dict(max_new_tokens=max_new_tokens, pad_token_id=lm.tokenizer.pad_token_id)
    if temperature > 0:
        options.update(do_sample=True, temperature=temperature, top_k=top_k or 0, top_p=top_p or 1.0)
    else:
        options.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    with lm.hooks(*hooks), torch.no_grad():
        torch.manual_seed(seed)
        output = lm.model.generate(**batch, **options)
    ids = output[0, batch["input_ids"].shape[1]:].tolist()
    text = lm.tokenizer.decode(ids, skip_special_tokens=True)
    for marker in stop or []:
        if marker and marker in text:
            text = text[: text.index(marker)]
            ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    return Generation(prompt=prompt, text=text, token_ids=ids)
