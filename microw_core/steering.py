"""Steering: change a layer's activations while the model generates, and measure what it does.

Concept steering edits SAE features (`FeatureEdit`, `SAESteering`):

* ``add``    adds ``value * unit(W_dec[f])`` to the layer output;
* ``clamp``  sets the feature's activation to ``value``: encode, set, and add back only the *difference*
             ``(f_new - f) @ W_dec``, so the SAE's reconstruction error stays in the activation;
* ``ablate`` removes the fraction ``strength`` of the feature's activation the same way (1 = off).

Strengths are in units a user can reason about: multiples of the feature's max activation (from the feature
table when the store has one, else estimated from the SAE's run or the prompt), multiples of the layer's median
activation norm, or raw. A strength of 0 is "off": the edit is skipped entirely, so the output is bit-identical.

Direct activation control reuses the hooks' controllers (`control_hook`): add or subtract a vector, scale, zero
or clamp a direction, optionally only at some positions. `caa_vector` builds a difference-of-means vector from
two prompt sets; `save_vector` / `load_vector` keep vectors in the store (vectors/<name>.safetensors + metadata).

`steer` runs the baseline, the steered model and a prompt-only baseline (the concept's name written into the
prompt) as separate generations with the same seed. Batching them would be faster, but a batch changes the
floating-point numerics of every row (about 1e-7 on CPU float32, more in bfloat16) and greedy decoding can then
pick a different token, so the baseline in a batch is not always plain `generate()`. `evaluate_steering`, which
only needs rates, does batch.
"""

from __future__ import annotations

import copy
import json
import math
import weakref
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from .errors import InvalidInputError, ShapeMismatchError, StoreCorruptError, StoreError
from .hooks import (ActivationRecorder, AddVector, ClampDirection, Controller, Detector, HookContext, ScaleDirection,
                    StopForward, ZeroDirection)
from .model import LanguageModel, generate
from .store import FileRecord, Store, safe_name

METHODS = ("add", "clamp", "ablate")
UNITS = ("max_activation", "median_norm", "raw")
POSITIONS = ("all", "prompt", "generated")
VECTOR_FORMAT = "microw-vector-1"


def _choice(kind: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidInputError(f"Unknown {kind} '{value}'; use one of {', '.join(allowed)}.")


@dataclass
class FeatureEdit:
    """One slider: `strength` of `method` on SAE feature `feature`, in `unit`s (0 = off)."""

    feature: int
    strength: float
    method: str = "add"
    unit: str = "max_activation"

    def __post_init__(self):
        _choice("steering method", self.method, METHODS)
        _choice("strength unit", self.unit, UNITS)
        if not math.isfinite(self.strength):
            raise InvalidInputError(f"The strength of feature {self.feature} must be a finite number.")
        if int(self.feature) != self.feature or self.feature < 0:
            raise InvalidInputError(f"Feature ids are whole numbers from 0 (got {self.feature}).")
        self.feature = int(self.feature)


@dataclass
class SteeringConfig:
    positions: str = "all"          # all | prompt | generated (see PositionSelector)
    max_new_tokens: int = 40
    temperature: float = 0.0        # 0 = greedy
    seed: int = 0
    top_k: int | None = None
    top_p: float | None = None
    stop: list[str] | None = None

    def __post_init__(self):
        _choice("positions option", self.positions, POSITIONS)

    def generate_options(self) -> dict:
        return dict(max_new_tokens=self.max_new_tokens, temperature=self.temperature, seed=self.seed,
                    top_k=self.top_k, top_p=self.top_p, stop=self.stop)


# ----- strength units --------------------------------------------------------------------------------------------


@dataclass
class SteeringScales:
    """What one unit of strength means for an SAE's features and its layer."""

    max_activation: torch.Tensor    # [width]; features never seen firing get the median of the others
    median_norm: float              # median activation norm of the layer over real (non-special) tokens
    source: str                     # where max_activation came from: feature_table, run:<name> or texts

    def unit(self, edit: FeatureEdit, decoder_norm: float) -> float:
        """Raw value of strength 1: the add coefficient, clamp target or (ablate) fraction removed."""
        if edit.method == "ablate" or edit.unit == "raw":
            return 1.0
        if edit.unit == "max_activation":
            return float(self.max_activation[edit.feature])
        # median_norm: the edit moves the activation by one median norm.
        return self.median_norm / (decoder_norm if edit.method == "clamp" else 1.0)

    def to_dict(self, features: Sequence[int] = ()) -> dict:
        return {"source": self.source, "median_norm": self.median_norm,
                "max_activation": {int(f): float(self.max_activation[f]) for f in features}}


_SCALES_CACHE: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def steering_scales(lm: LanguageModel, sae, store: Store | None = None, sae_name: str | None = None,
                    texts: Sequence[str] = (), max_tokens: int = 20_000) -> SteeringScales:
    """Units for the SAE's features: max activations from the feature table, else estimated.

    The layer sample comes from the SAE's activation run in the store (its first `max_tokens` tokens), else
    from a forward pass over `texts`. Results from the store are cached per SAE object.
    """
    frame = _feature_table(store, sae_name)
    key = (str(store.root), sae_name, frame is not None) if store is not None else None
    cached = _SCALES_CACHE.get(sae, {}).get(key) if key else None
    if cached is not None:
        return cached
    sample, source = _run_sample(store, sae, max_tokens), f"run:{sae.cfg.run}"
    if sample is None:
        if not texts:
            raise InvalidInputError("Cannot size steering strengths: the SAE's run is not in the store and no texts "
                                    "were given; pass a store holding the run, or use unit='raw'.")
        sample, source, key = _text_sample(lm, sae.cfg.layer, texts), "texts", None
    median_norm = float(sample.norm(dim=-1).median())
    if frame is not None:
        max_act = torch.zeros(sae.cfg.width)
        max_act[torch.tensor(frame["feature"].to_numpy(), dtype=torch.long)] = torch.tensor(
            frame["max_activation"].to_numpy(), dtype=torch.float32)
        source = "feature_table"
    else:
        with torch.no_grad():
            max_act = torch.stack([sae.encode(chunk.to(sae.W_dec.device)).amax(0).float().cpu()
                                   for chunk in sample.split(4096)]).amax(0)
    fired = max_act[max_act > 0]
    typical = float(fired.median()) if fired.numel() else median_norm
    scales = SteeringScales(torch.where(max_act > 0, max_act, torch.full_like(max_act, typical)), median_norm, source)
    if key:
        _SCALES_CACHE.setdefault(sae, {})[key] = scales
    return scales


def _feature_table(store: Store | None, sae_name: str | None):
    """The SAE's feature table, or None when it has no current feature dashboards (then scales are estimated)."""
    if store is None or not sae_name or not store.exists(f"saes/{safe_name(sae_name)}/features/meta.json"):
        return None
    from .features import load_feature_table

    try:
        return load_feature_table(store, sae_name)
    except StoreCorruptError:
        raise
    except StoreError:
        return None  # dashboards of earlier weights of this SAE


def _run_sample(store: Store | None, sae, max_tokens: int) -> torch.Tensor | None:
    if store is None or not sae.cfg.run:
        return None
    from .capture import open_run

    try:
        run = open_run(store, sae.cfg.run)
        return run.load(sae.cfg.layer, max_tokens=max_tokens) if sae.cfg.layer in run.layers else None
    except StoreError:
        return None  # the run was deleted: estimate from texts instead


def real_token_mask(lm: LanguageModel, batch) -> torch.Tensor:
    """[batch, seq] True at real tokens that are not special (BOS activations are outliers)."""
    mask = batch["attention_mask"].bool()
    special = torch.tensor(sorted(lm.special_token_ids), device=mask.device)
    return mask & ~torch.isin(batch["input_ids"], special)


def _text_sample(lm: LanguageModel, layer: str, texts: Sequence[str], batch_size: int = 16) -> torch.Tensor:
    rows = []
    for start in range(0, len(texts), batch_size):
        batch = lm.tokenize(list(texts[start:start + batch_size]), max_length=256)
        recorder = ActivationRecorder(layer, stop_forward=True)
        with lm.hooks(recorder):
            lm.forward(**batch)
        rows.append(recorder.last[real_token_mask(lm, batch).cpu()].float())
    sample = torch.cat(rows)
    if not len(sample):
        raise InvalidInputError("The texts have no ordinary tokens to measure the layer on; pass longer texts.")
    return sample


# ----- which positions -------------------------------------------------------------------------------------------


class PositionSelector:
    """Which positions of a forward to edit: all, prompt only, or generated only.

    A forward with past_length 0 is the prompt (cached generation, the transformers default); its length is
    remembered, so later positions are generated ones. "generated" also includes the last prompt position,
    whose output predicts the first new token, so every generated token is steered. Padding is never edited.
    """

    def __init__(self, positions: str = "all", prompt_length: int | None = None):
        _choice("positions option", positions, POSITIONS)
        self.positions = positions
        self.prompt_length = prompt_length
        self.fixed = prompt_length is not None  # one forward over prompt + continuation: keep the given length

    def __call__(self, ctx: HookContext, activation: torch.Tensor) -> torch.Tensor | None:
        """[batch, seq] bool, or None for "every position"."""
        batch, seq = activation.shape[:2]
        if ctx.past_length == 0 and not self.fixed:
            self.prompt_length = seq
        mask = ctx.attention_mask
        real = mask.bool() if mask is not None and mask.dim() == 2 and not mask.bool().all() else None
        if self.positions == "all":
            return real
        position = torch.arange(ctx.past_length, ctx.past_length + seq, device=activation.device)
        if self.prompt_length is None:  # attached in the middle of a generation: all of it is generated
            chosen = torch.full_like(position, self.positions == "generated", dtype=torch.bool)
        elif self.positions == "prompt":
            chosen = position < self.prompt_length
        else:
            chosen = position >= self.prompt_length - 1
        chosen = chosen.unsqueeze(0).expand(batch, seq)
        return chosen if real is None else chosen & real


# ----- hooks -------------------------------------------------------------------------------------------------------


class FeatureEncoder:
    """Activations of chosen SAE features, computing no more of the encoder than needed.

    ReLU, JumpReLU and BatchTopK (at inference a per-feature threshold) act on each feature alone, so only the
    chosen encoder columns are used. TopK needs every pre-activation to know the k largest, but a chosen feature
    whose pre-activation is not positive is off whatever the others do: the full encoder (a weight read as large
    as a sizeable part of a small model) runs only at positions where one of them could be on.
    """

    ELEMENTWISE = ("relu", "jumprelu", "batchtopk")

    def __init__(self, sae, features: Sequence[int]):
        self.features = torch.tensor(list(features), dtype=torch.long)
        self.elementwise = sae.cfg.arch in self.ELEMENTWISE
        self.k = None if self.elementwise else sae.cfg.k
        with torch.no_grad():
            W = sae.W_enc.detach()
            b = sae.b_enc.detach() - sae.b_dec.detach() @ W  # pre = x @ W + b, one addmm per call
            self.sel_weight = W[:, self.features].t().contiguous()
            self.sel_bias = b[self.features]
            self.weight = None if self.elementwise else W.t().contiguous()
            self.bias = None if self.elementwise else b
            threshold = getattr(sae, "threshold", None) if self.elementwise else None
            self.threshold = None if threshold is None else threshold.detach()[self.features]
        self.features = self.features.to(self.sel_weight.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """[..., len(features)] activations of x [..., d_in]."""
        x = x.to(self.sel_weight.device, self.sel_weight.dtype)
        pre = torch.nn.functional.linear(x, self.sel_weight, self.sel_bias)
        if self.elementwise:
            f = pre.relu()
            return f if self.threshold is None else f * (pre > self.threshold)
        on = pre > 0
        if not on.any():
            return torch.zeros_like(pre)
        # A feature counts when its pre-activation is among the k largest (topk: several times faster than
        # kthvalue on CPU).
        full = torch.nn.functional.linear(x, self.weight, self.bias)
        kth = full.topk(self.k, dim=-1, sorted=False).values.amin(-1, keepdim=True)
        return torch.where(on & (pre >= kth), pre, 0.0)


class SAESteering(Controller):
    """Edits SAE features in the output of the SAE's layer.

    `row_strengths` [rows, len(edits)] replaces the edits' strengths per batch row (row r of the batch uses
    row r; a single row applies to all), so steered and unsteered rows can share one batch. With no active
    edit the activation is returned untouched (the same tensor).
    """

    def __init__(self, sae, edits: Sequence[FeatureEdit], scales: SteeringScales | None = None,
                 positions: str = "all", row_strengths: torch.Tensor | None = None):
        super().__init__(sae.cfg.layer)
        self.sae, self.edits = sae, list(edits)
        self.select = PositionSelector(positions)
        width = sae.cfg.width
        for edit in self.edits:
            if edit.feature >= width:
                raise InvalidInputError(f"Feature {edit.feature} does not exist: this SAE has features 0..{width - 1}.")
        strengths = (torch.tensor([[e.strength for e in self.edits]], dtype=torch.float32) if row_strengths is None
                     else torch.as_tensor(row_strengths, dtype=torch.float32).reshape(-1, len(self.edits)))
        methods = [e.method for e in self.edits]
        add = [j for j, m in enumerate(methods) if m == "add"]
        enc = [j for j, m in enumerate(methods) if m != "add"]
        with torch.no_grad():
            W_dec = sae.W_dec.detach()
            units = torch.tensor([self._unit(e, scales, W_dec, bool(strengths[:, j].any()))
                                  for j, e in enumerate(self.edits)], dtype=torch.float32)
            values = strengths * units
            clamp = torch.tensor([m == "clamp" for m in methods], dtype=torch.bool)
            self.values = torch.where(clamp & (strengths == 0), torch.nan, values)  # clamp at 0: leave it be
            # Every add edit together is one vector per row (zero for rows at strength 0).
            add_dirs = W_dec[[self.edits[j].feature for j in add]]
            add_dirs = add_dirs / add_dirs.norm(dim=1, keepdim=True).clamp_min(1e-12)
            add_delta = self.values[:, add].to(W_dec.device) @ add_dirs
            self.add_delta = add_delta.unsqueeze(1) if add and add_delta.any() else None  # [rows, 1, d]
            enc_features = [self.edits[j].feature for j in enc]
            self.enc_dirs = W_dec[enc_features]
            ablate = torch.tensor([methods[j] == "ablate" for j in enc], dtype=torch.bool)
            target = torch.where(ablate, torch.nan, self.values[:, enc])
            fraction = torch.where(ablate, self.values[:, enc], 0.0)
            self.clamp_target = target.unsqueeze(1).to(W_dec.device)  # [rows, 1, n]; NaN: not clamped
            self.kept_fraction = (1 - fraction).unsqueeze(1).to(W_dec.device)
            self.clamp_only = not target.isnan().any()  # every row clamps every one of these features
            enc_active = bool((~target.isnan()).any() or fraction.ne(0).any())
        self.encoder = FeatureEncoder(sae, enc_features) if enc_active else None
        self.active = self.add_delta is not None or self.encoder is not None

    @staticmethod
    def _unit(edit: FeatureEdit, scales: SteeringScales | None, W_dec: torch.Tensor, used: bool) -> float:
        if not used or edit.method == "ablate" or edit.unit == "raw":
            return 1.0
        if scales is None:
            raise InvalidInputError("Strengths in max_activation or median_norm units need SteeringScales "
                                    "(steering_scales(...)); or use unit='raw'.")
        return scales.unit(edit, float(W_dec[edit.feature].norm()))

    def _rows(self, table: torch.Tensor, batch: int) -> torch.Tensor:
        if len(table) not in (1, batch):
            raise ShapeMismatchError(f"The steering hook has strengths for {len(table)} rows but the batch has {batch}; "
                                     "give one row of strengths, or one per batch row.")
        return table  # [1 or batch, 1, n] broadcasts over the batch and the positions

    def modify(self, ctx: HookContext, activation: torch.Tensor) -> torch.Tensor:
        # Few tensor ops on purpose: this runs at every generation step.
        if not self.active:
            return activation
        where = self.select(ctx, activation)
        if where is not None:
            if not where.any():
                return activation
            where = where.unsqueeze(-1).to(self.enc_dirs.device, self.enc_dirs.dtype)
        batch, delta = activation.shape[0], None
        if self.add_delta is not None:
            delta = self._rows(self.add_delta, batch)
            delta = delta if where is None else delta * where
        if self.encoder is not None:
            f = self.encoder(activation)
            target = self._rows(self.clamp_target, batch)
            if not self.clamp_only:
                target = torch.where(target.isnan(), f * self._rows(self.kept_fraction, batch), target)
            change = target - f if where is None else (target - f) * where
            clamped = change @ self.enc_dirs
            delta = clamped if delta is None else delta + clamped
        return activation + delta.to(activation.device, activation.dtype)


class FeatureRecorder(Detector):
    """Records SAE feature activations at every forward of the SAE's layer (attach after any steering hook)."""

    def __init__(self, sae, features: Sequence[int], stop_forward: bool = False):
        super().__init__(sae.cfg.layer)
        self.encoder = FeatureEncoder(sae, features)
        self.stop_forward = stop_forward  # end the forward here: nothing deeper is needed
        self.chunks: list[torch.Tensor] = []

    def observe(self, ctx: HookContext, activation: torch.Tensor) -> None:
        if ctx.past_length == 0:
            self.chunks.clear()  # a new prompt
        self.chunks.append(self.encoder(activation).detach().float().cpu())
        if self.stop_forward:
            raise StopForward

    def per_new_token(self, n_tokens: int) -> torch.Tensor:
        """[batch, n_tokens, features] after a cached generation: entry k is the activation at the position that
        produced new token k (the last prompt position for k = 0)."""
        if not self.chunks:
            return torch.zeros(0, n_tokens, len(self.encoder.features))
        values = torch.cat(self.chunks, dim=1)
        start = self.chunks[0].shape[1] - 1
        return values[:, start:start + n_tokens]


def feature_trace(lm: LanguageModel, sae, prompt: str, token_ids: Sequence[int], features: Sequence[int],
                  hook: SAESteering | None = None) -> dict[int, list[float]]:
    """Activations of `features` per generated token, after `hook`'s edit: one forward over the prompt and the
    continuation, read at the position that produced each token (entry k: the input is token k - 1).

    One batched pass after generation costs about as much as a generation step, where recording during
    generation would run the SAE encoder at every step.
    """
    if not features or not token_ids:
        return {f: [] for f in features}
    prompt_ids = lm.tokenize([prompt])["input_ids"]
    ids = torch.cat([prompt_ids, torch.tensor([list(token_ids[:-1])], device=prompt_ids.device)], dim=1)
    recorder = FeatureRecorder(sae, features, stop_forward=True)
    hooks = (recorder,)
    if hook is not None and hook.active:
        hook = copy.copy(hook)  # the same edits, told where the prompt ends in this single forward
        hook.select = PositionSelector(hook.select.positions, prompt_length=prompt_ids.shape[1])
        hooks = (hook, recorder)
    with lm.hooks(*hooks):
        lm.forward(input_ids=ids, attention_mask=torch.ones_like(ids))
    values = recorder.chunks[-1][0, prompt_ids.shape[1] - 1:]
    return {f: values[:, i].tolist() for i, f in enumerate(features)}


class Positioned(Controller):
    """Applies another controller only at the selected positions (all / prompt / generated)."""

    def __init__(self, inner: Controller, positions: str = "all"):
        super().__init__(inner.layer)
        self.inner, self.select = inner, PositionSelector(positions)

    def modify(self, ctx: HookContext, activation: torch.Tensor) -> torch.Tensor:
        where = self.select(ctx, activation)
        if where is not None and not where.any():
            return activation
        new = self.inner.modify(ctx, activation)
        return new if where is None else torch.where(where.unsqueeze(-1), new, activation)


CONTROL_OPS = ("add", "subtract", "scale", "zero", "clamp")


def control_hook(op: str, layer: str, vector: torch.Tensor, strength: float = 1.0,
                 positions: str = "all") -> Controller:
    """A controller for direct activation control at `layer`.

    add / subtract: +- strength * vector (raw activation units: a CAA vector at strength 1 moves the
    activation by one difference of means); scale: multiply the component along `vector` by strength;
    zero: project the direction out (directional ablation); clamp: set the component along it to strength.
    """
    _choice("control operation", op, CONTROL_OPS)
    vector = torch.as_tensor(vector).detach().float().flatten()
    if not torch.isfinite(vector).all() or (op != "add" and op != "subtract" and not vector.norm() > 0):
        raise InvalidInputError("The control vector must be finite (and non-zero to define a direction).")
    inner = {
        "add": lambda: AddVector(layer, vector, scale=strength),
        "subtract": lambda: AddVector(layer, vector, scale=-strength),
        "scale": lambda: ScaleDirection(layer, vector, strength),
        "zero": lambda: ZeroDirection(layer, vector),
        "clamp": lambda: ClampDirection(layer, vector, strength),
    }[op]()
    return inner if positions == "all" else Positioned(inner, positions)


# ----- generation ----------------------------------------------------------------------------------------------


def concept_prompt(prompt: str, names: Sequence[str]) -> str:
    """The prompt-only baseline: the concepts written into the prompt.

    Demo topics get the corpus's own opening sentence for the topic (the demo model has never seen a
    bracketed note); other names get "(about X) ".
    """
    from .demo import corpus

    if names and all(n in corpus.TOPICS for n in names):
        return " ".join([*(corpus.topic_prompt(n) for n in names), prompt])
    return f"(about {', '.join(names)}) {prompt}"


def _concept_names(store: Store | None, sae_name: str | None, features: Sequence[int]) -> dict[int, str]:
    """Names of features from the SAE's concept dictionary, else the feature table's labels."""
    if store is None or not sae_name or not features:
        return {}
    names: dict[int, str] = {}
    if store.exists(f"saes/{safe_name(sae_name)}/concepts.json"):
        from .concepts import ConceptDictionary

        names = {c.feature: c.name for c in ConceptDictionary.load(store, sae_name).entries if c.name}
    elif (frame := _feature_table(store, sae_name)) is not None:
        if "label" in frame:
            names = {int(f): str(l) for f, l in zip(frame["feature"], frame["label"]) if isinstance(l, str) and l}
    return {f: names[f] for f in features if f in names}


def steer(lm: LanguageModel, sae, edits: Sequence[FeatureEdit], prompt: str, config: SteeringConfig | None = None,
          store: Store | None = None, sae_name: str | None = None, concept_names: dict[int, str] | None = None,
          scales: SteeringScales | None = None) -> dict:
    """Baseline, steered and prompt-only-baseline continuations of `prompt`, with the edited features'
    activations per generated token (entry k: at the position that produced token k).

    Every generation is a separate call with the same seed, so the baseline is exactly `generate()` and,
    with no active edit, `steered == baseline`. The prompt baseline is None when no edited feature has a name
    (pass `concept_names`, or name features in the concept dictionary).
    """
    config = config or SteeringConfig()
    edits = list(edits)
    features = list(dict.fromkeys(e.feature for e in edits))
    needs_scales = any(e.strength and e.method != "ablate" and e.unit != "raw" for e in edits)
    if scales is None and needs_scales:
        scales = steering_scales(lm, sae, store, sae_name, texts=[prompt])
    hook = SAESteering(sae, edits, scales, config.positions)
    options = config.generate_options()
    baseline = generate(lm, prompt, **options)
    steered = generate(lm, prompt, hooks=(hook,), **options) if hook.active else baseline
    baseline_acts = feature_trace(lm, sae, prompt, baseline.token_ids, features)
    steered_acts = feature_trace(lm, sae, prompt, steered.token_ids, features, hook)
    active = [e.feature for e in edits if e.strength and e.method != "ablate"]
    names = concept_names if concept_names is not None else _concept_names(store, sae_name, active)
    names = [names[f] for f in dict.fromkeys(active) if f in names]
    prompted = concept_prompt(prompt, names) if names else None
    prompt_baseline = generate(lm, prompted, **options).text if prompted else None
    tokens = lambda ids: [lm.tokenizer.decode([i]) for i in ids]  # noqa: E731
    return {
        "prompt": prompt, "baseline": baseline.text, "steered": steered.text, "prompt_baseline": prompt_baseline,
        "prompt_baseline_prompt": prompted,
        "activations": steered_acts, "baseline_activations": baseline_acts,
        "tokens": {"baseline": tokens(baseline.token_ids), "steered": tokens(steered.token_ids)},
        # value: the raw add coefficient / clamp target / ablated fraction; None for an edit that is off
        "edits": [{**asdict(e), "value": float(v) if e.strength else None} for e, v in zip(edits, hook.values[0])],
        "scales": scales.to_dict(features) if scales is not None else None,
        "config": asdict(config),
    }


def compare(lm: LanguageModel, prompt: str, hooks: Sequence[Controller], config: SteeringConfig | None = None) -> dict:
    """Baseline and controlled continuations (direct activation control), separate calls with one seed."""
    config = config or SteeringConfig()
    options = config.generate_options()
    return {"prompt": prompt, "baseline": generate(lm, prompt, **options).text,
            "steered": generate(lm, prompt, hooks=tuple(hooks), **options).text}


# ----- difference-of-means vectors ---------------------------------------------------------------------------------


AGGREGATES = ("last", "mean")


def layer_mean(lm: LanguageModel, layer: str, prompts: Sequence[str], aggregate: str = "last",
               batch_size: int = 16) -> torch.Tensor:
    """Mean over prompts of the layer's activation: at each prompt's last token ("last"), or averaged over its
    real, non-special tokens first ("mean"; every prompt weighs the same)."""
    _choice("aggregate", aggregate, AGGREGATES)
    if not prompts:
        raise InvalidInputError("Give at least one prompt for each side of a difference-of-means vector.")
    total, n = None, 0
    for start in range(0, len(prompts), batch_size):
        batch = lm.tokenize(list(prompts[start:start + batch_size]))
        recorder = ActivationRecorder(layer, stop_forward=True)
        with lm.hooks(recorder):
            lm.forward(**batch)
        acts = recorder.last.float()
        if aggregate == "last":
            last = batch["attention_mask"].sum(1).cpu() - 1  # right padding: the last real token
            rows = acts[torch.arange(len(acts)), last]
        else:
            keep = real_token_mask(lm, batch).cpu()
            keep[keep.sum(1) == 0] = batch["attention_mask"].bool().cpu()[keep.sum(1) == 0]  # only specials: keep them
            rows = (acts * keep.unsqueeze(-1)).sum(1) / keep.sum(1, keepdim=True)
        total = rows.sum(0) if total is None else total + rows.sum(0)
        n += len(rows)
    return total / n


def caa_vector(lm: LanguageModel, layer: str, positive_prompts: Sequence[str], negative_prompts: Sequence[str],
               aggregate: str = "last", batch_size: int = 16) -> torch.Tensor:
    """Contrastive activation addition (Rimsky et al. 2024): mean(positive) - mean(negative) at `layer`.

    Adding it (control_hook("add", layer, vector)) moves activations towards the positive prompts.
    """
    return (layer_mean(lm, layer, positive_prompts, aggregate, batch_size)
            - layer_mean(lm, layer, negative_prompts, aggregate, batch_size))


def _vector_path(name: str) -> str:
    return f"vectors/{safe_name(name)}.safetensors"


def save_vector(store: Store, name: str, vector: torch.Tensor, meta: dict | None = None) -> FileRecord:
    """Save a steering vector as vectors/<name>.safetensors; `meta` (JSON-able: layer, model, kind ...) goes into
    the file's metadata."""
    vector = torch.as_tensor(vector).detach().float().cpu()
    if vector.dim() != 1 or not torch.isfinite(vector).all():
        raise InvalidInputError(f"A steering vector is one finite row of numbers (got shape {tuple(vector.shape)}).")
    return store.write_tensors(_vector_path(name), {"vector": vector},
                               metadata={"format": VECTOR_FORMAT, "meta": json.dumps(meta or {})})


def load_vector(store: Store, name: str) -> tuple[torch.Tensor, dict]:
    """(vector, meta) saved by save_vector."""
    path = _vector_path(name)
    if not store.exists(path):
        known = ", ".join(v["name"] for v in list_vectors(store)) or "none"
        raise StoreError(f"There is no vector '{name}' in the store {store.root} (known: {known}); "
                         "save one with save_vector or the Steering page.")
    tensors = store.read_tensors(path)
    header = _safetensors_metadata(store.read_bytes(path))
    if "vector" not in tensors or header.get("format") != VECTOR_FORMAT:
        raise StoreError(f"{store.root / path} is not a microw steering vector; save it again with save_vector.")
    return tensors["vector"], json.loads(header.get("meta") or "{}")


def list_vectors(store: Store) -> list[dict]:
    folder = store.root / "vectors"
    out = []
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        try:
            vector, meta = load_vector(store, path.stem)
            out.append({"name": path.stem, "d": len(vector), "meta": meta})
        except StoreError as err:
            out.append({"name": path.stem, "error": str(err)})
    return out


def _safetensors_metadata(data: bytes) -> dict:
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size]).get("__metadata__") or {}


# ----- evaluation on the demo ------------------------------------------------------------------------------------


# In units of each feature's maximum activation; from about 0.7 up the demo's text starts to break down.
DEFAULT_STRENGTHS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)


@dataclass
class SteeringEvalConfig:
    """How `evaluate_steering` sweeps: neutral prompts x samples per strength, batched generations."""

    method: str = "clamp"           # clamp steadies the feature where it already fires: less damage than add
    unit: str = "max_activation"
    positions: str = "all"
    max_new_tokens: int = 40
    temperature: float = 1.0        # sampled, so rates are not 0/1 per prompt
    samples: int = 8                # continuations per neutral prompt and strength
    seed: int = 0
    batch_size: int = 256
    stories_per_topic: int = 20     # validation stories per topic for finding topic features
    features_per_topic: int = 5     # steer a topic's best n features together, each at the strength
    success_rate: float = 0.7       # a topic succeeds when its best strength reaches this ...
    max_baseline_rate: float = 0.15  # ... while the unsteered rate is at most this ...
    max_ppl_ratio: float = 2.0      # ... and perplexity is at most this multiple of the unsteered one


def topic_features(lm: LanguageModel, sae, store: Store | None = None, sae_name: str | None = None,
                   topics: Sequence[str] | None = None, stories_per_topic: int = 20, seed: int = 0,
                   per_topic: int = 1) -> dict[str, dict]:
    """For each demo topic, the SAE features that best match it (`feature`: the best; `features`: the best
    `per_topic`, best first).

    Features named like the topic in the concept dictionary win; otherwise the features whose mean activation
    over the topic's validation stories (single-topic stories, real tokens) most exceeds their mean on every
    other topic (score = mean on topic - highest mean on another topic).
    """
    from .demo import corpus

    topics = list(topics or corpus.TOPICS)
    named: dict[str, list[int]] = {}
    if store is not None and sae_name and store.exists(f"saes/{safe_name(sae_name)}/concepts.json"):
        from .concepts import ConceptDictionary

        for concept in ConceptDictionary.load(store, sae_name).entries:
            if concept.name.lower() in topics:
                named.setdefault(concept.name.lower(), []).append(concept.feature)
    stories: dict[str, list[str]] = {t: [] for t in corpus.TOPICS}
    for story in corpus.iter_stories("validation", seed):
        if len(story.topics) == 1 and len(stories[story.topics[0]]) < stories_per_topic:
            stories[story.topics[0]].append(story.text)
            if all(len(v) >= stories_per_topic for v in stories.values()):
                break
    means = torch.stack([_feature_means(lm, sae, stories[t]) for t in corpus.TOPICS])  # [all topics, width]
    out = {}
    for topic in topics:
        row = corpus.TOPICS.index(topic)
        others = torch.cat([means[:row], means[row + 1:]]).amax(0)
        score = means[row] - others
        chosen = named[topic][:per_topic] if topic in named else score.topk(per_topic).indices.tolist()
        out[topic] = {"feature": chosen[0], "features": chosen, "source": "concepts" if topic in named else "stories",
                      "score": float(score[chosen[0]]), "mean_on_topic": float(means[row, chosen[0]]),
                      "max_mean_off_topic": float(others[chosen[0]])}
    return out


def _feature_means(lm: LanguageModel, sae, texts: Sequence[str], batch_size: int = 16) -> torch.Tensor:
    total, n = torch.zeros(sae.cfg.width), 0
    for start in range(0, len(texts), batch_size):
        batch = lm.tokenize(list(texts[start:start + batch_size]), max_length=256)
        recorder = ActivationRecorder(sae.cfg.layer, stop_forward=True)
        with lm.hooks(recorder):
            lm.forward(**batch)
        keep = real_token_mask(lm, batch).cpu()
        with torch.no_grad():
            f = sae.encode(recorder.last[keep].to(sae.W_dec.device)).float().cpu()
        total += f.sum(0)
        n += len(f)
    return total / max(n, 1)


@dataclass
class _Rows:
    """Batched continuations and their measurements (one entry per row)."""

    prompts: list[str]
    token_ids: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    activation: list[torch.Tensor] = field(default_factory=list)       # [features] mean over generated positions
    nll: list[float] = field(default_factory=list)                     # summed over the continuation
    text_activation: list[torch.Tensor] = field(default_factory=list)  # unsteered model on the text, mean


def _generate_rows(lm: LanguageModel, sae, prompts: list[str], features: list[int], cfg: SteeringEvalConfig,
                   steering: Callable[[int, int], SAESteering], seed: int) -> _Rows:
    """Left-padded batched generation; `steering(start, stop)` gives the hook for rows start:stop."""
    rows = _Rows(prompts)
    eos = {lm.tokenizer.eos_token_id, lm.tokenizer.pad_token_id} - {None}
    options = dict(max_new_tokens=cfg.max_new_tokens, pad_token_id=lm.tokenizer.pad_token_id)
    if cfg.temperature > 0:
        options.update(do_sample=True, temperature=cfg.temperature, top_k=0, top_p=1.0)
    else:
        options.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    size = math.ceil(len(prompts) / math.ceil(len(prompts) / cfg.batch_size))  # equal chunks, none nearly empty
    for start in range(0, len(prompts), size):
        chunk = prompts[start:start + size]
        batch = lm.tokenize(chunk, padding_side="left")
        recorder = FeatureRecorder(sae, features)
        with lm.hooks(steering(start, start + len(chunk)), recorder), torch.no_grad():
            torch.manual_seed(seed + start)
            output = lm.model.generate(**batch, **options)
        new = output[:, batch["input_ids"].shape[1]:].tolist()
        acts = recorder.per_new_token(cfg.max_new_tokens)
        for r, ids in enumerate(new):
            n = next((i for i, t in enumerate(ids) if t in eos), len(ids))
            rows.token_ids.append(ids[:n])
            rows.texts.append(lm.tokenizer.decode(ids[:n], skip_special_tokens=True))
            rows.activation.append(acts[r, :max(n, 1)].mean(0))
    _score_rows(lm, sae, rows, features, cfg.batch_size)
    return rows


def _score_rows(lm: LanguageModel, sae, rows: _Rows, features: list[int], batch_size: int) -> None:
    """NLL of each continuation under the unsteered model, and the features' mean activation on it."""
    prompt_ids = lm.tokenizer(rows.prompts)["input_ids"]
    index = torch.tensor(features, dtype=torch.long)
    for start in range(0, len(rows.prompts), batch_size):
        seqs = [p + c for p, c in zip(prompt_ids[start:start + batch_size], rows.token_ids[start:start + batch_size])]
        length = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), length), lm.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(seqs):
            ids[r, :len(s)], mask[r, :len(s)] = torch.tensor(s), 1
        recorder = ActivationRecorder(sae.cfg.layer)
        with lm.hooks(recorder):
            logits = lm.forward(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)).logits.float().cpu()
        logprobs = logits.log_softmax(-1)
        for r, s in enumerate(seqs):
            p = len(prompt_ids[start + r])
            n = len(s) - p
            if n == 0:
                rows.nll.append(0.0)
                rows.text_activation.append(torch.zeros(len(features)))
                continue
            picked = logprobs[r, p - 1:len(s) - 1].gather(1, ids[r, p:len(s), None])
            rows.nll.append(-float(picked.sum()))
            with torch.no_grad():
                f = sae.encode(recorder.last[r, p:len(s)].to(sae.W_dec.device))[..., index.to(sae.W_dec.device)]
            rows.text_activation.append(f.float().mean(0).cpu())


def _perplexity(rows: _Rows, picks: Sequence[int]) -> float:
    tokens = sum(len(rows.token_ids[i]) for i in picks)
    return math.exp(sum(rows.nll[i] for i in picks) / tokens) if tokens else float("nan")


def evaluate_steering(lm: LanguageModel, sae, store: Store | None, sae_name: str | None,
                      strengths: Sequence[float] = DEFAULT_STRENGTHS, config: SteeringEvalConfig | None = None,
                      topics: Sequence[str] | None = None, progress: Callable[[float, str], None] | None = None,
                      should_stop: Callable[[], bool] | None = None) -> dict:
    """Steer towards each demo topic from neutral prompts over a sweep of strengths and measure the effect.

    A topic is steered with its best `features_per_topic` features (topic_features), each at the strength.
    Per topic and strength: success rate (corpus.classify_topic(continuation) == topic), perplexity of the
    continuations under the unsteered model (pooled over tokens) and its ratio to the unsteered perplexity,
    the target features' mean activation at the steered layer while generating (`activation`, after the
    edit) and on the generated text under the unsteered model (`text_activation`). The prompt-only baseline
    (corpus.topic_prompt(topic) before the neutral prompt) is measured alongside.

    A topic's best strength is the one with the highest success rate among those whose perplexity ratio is
    within `max_ppl_ratio` (else the highest overall); it succeeds when that rate is at least `success_rate`,
    the unsteered rate is at most `max_baseline_rate` and the perplexity ratio is within bounds.
    """
    from .demo import corpus

    cfg = config or SteeringEvalConfig()
    strengths = sorted({0.0, *map(float, strengths)})
    if len(strengths) < 2:
        raise InvalidInputError("Give at least one non-zero strength to evaluate steering.")
    topics = list(topics or corpus.TOPICS)
    report = progress or (lambda fraction, message: None)
    report(0.0, "finding the feature of each topic")
    matches = topic_features(lm, sae, store, sae_name, topics, cfg.stories_per_topic, cfg.seed,
                             cfg.features_per_topic)
    features = [f for t in topics for f in matches[t]["features"]]  # recorded in the unsteered run
    scales = steering_scales(lm, sae, store, sae_name, texts=corpus.NEUTRAL_PROMPTS) if cfg.unit != "raw" else None
    neutral = [p for p in corpus.NEUTRAL_PROMPTS for _ in range(cfg.samples)]
    report(0.05, "unsteered continuations")
    base = _generate_rows(lm, sae, neutral, features, cfg, lambda a, b: SAESteering(sae, []),
                          cfg.seed)
    base_topics = [corpus.classify_topic(t) for t in base.texts]
    base_picks = range(len(neutral))
    base_ppl = _perplexity(base, base_picks)
    per_topic = {}
    for i, topic in enumerate(topics):
        if should_stop is not None and should_stop():
            break
        targets = matches[topic]["features"]
        edits = [FeatureEdit(f, 1.0, cfg.method, cfg.unit) for f in targets]
        steered = [s for s in strengths if s != 0]
        prompts = [p for _ in steered for p in neutral] + [concept_prompt(p, [topic]) for p in neutral]
        row_strengths = torch.tensor([s for s in steered for _ in neutral] + [0.0] * len(neutral))
        row_strengths = row_strengths[:, None].expand(-1, len(edits))

        def hook(a: int, b: int) -> SAESteering:
            return SAESteering(sae, edits, scales, cfg.positions, row_strengths[a:b])

        rows = _generate_rows(lm, sae, prompts, targets, cfg, hook, cfg.seed + 1000 * (i + 1))
        base_columns = [features.index(f) for f in targets]
        n = len(neutral)
        success, ppl, activation, text_activation = [], [], [], []
        for k, s in enumerate(strengths):
            if s == 0:
                picks, source, columns = base_picks, base, base_columns
                hits = [t == topic for t in base_topics]
            else:
                j = steered.index(s)
                picks, source, columns = range(j * n, (j + 1) * n), rows, list(range(len(targets)))
                hits = [corpus.classify_topic(rows.texts[r]) == topic for r in picks]
            success.append(sum(hits) / n)
            ppl.append(_perplexity(source, picks))
            # mean over the topic's features and the continuations
            activation.append(float(torch.stack([source.activation[r][columns] for r in picks]).mean()))
            text_activation.append(float(torch.stack([source.text_activation[r][columns] for r in picks]).mean()))
        prompted = range(len(steered) * n, len(prompts))
        ratios = [p / base_ppl for p in ppl]
        candidates = [k for k, s in enumerate(strengths) if s != 0 and ratios[k] <= cfg.max_ppl_ratio]
        candidates = candidates or [k for k, s in enumerate(strengths) if s != 0]
        best = max(candidates, key=lambda k: (success[k], -k))
        baseline = success[strengths.index(0.0)]
        per_topic[topic] = {
            **matches[topic], "strengths": strengths, "success": success, "ppl": ppl, "ppl_ratio": ratios,
            "activation": activation, "text_activation": text_activation,
            "monotonic": all(b >= a for a, b in zip(activation, activation[1:])),
            "baseline": baseline,
            "prompt_success": sum(corpus.classify_topic(rows.texts[r]) == topic for r in prompted) / n,
            "prompt_ppl_ratio": _perplexity(rows, prompted) / base_ppl,
            "best_strength": strengths[best], "best_success": success[best], "best_ppl_ratio": ratios[best],
            "succeeded": (success[best] >= cfg.success_rate and baseline <= cfg.max_baseline_rate
                          and ratios[best] <= cfg.max_ppl_ratio),
            "example": rows.texts[steered.index(strengths[best]) * n],
        }
        report(0.05 + 0.95 * (i + 1) / len(topics), f"steered towards {topic}")
    done = list(per_topic.values())
    mean = lambda key: sum(t[key] for t in done) / len(done) if done else float("nan")  # noqa: E731
    return {
        "topics": len(done), "succeeded": sum(t["succeeded"] for t in done),
        "succeeded_topics": [name for name, t in per_topic.items() if t["succeeded"]],
        "mean_success": mean("best_success"), "mean_baseline": mean("baseline"),
        "mean_prompt_success": mean("prompt_success"), "mean_ppl_ratio": mean("best_ppl_ratio"),
        "monotonic": sum(t["monotonic"] for t in done), "unsteered_ppl": base_ppl,
        "strengths": strengths, "config": asdict(cfg), "scales_source": scales.source if scales else "raw",
        "per_topic": per_topic,
    }
