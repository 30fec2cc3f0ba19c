"""Feature dashboards: one streamed pass of model + SAE fills every feature's card.

For every SAE feature the pass records density, mean and max activation, the top-N activating
contexts (with the exact activation of every token in the context window), samples from ten
activation bins, a 50-bin histogram, logit effects, decoder-cosine neighbours and a suggested
label. Everything is vectorised over the sparse (row, feature, value) entries of each batch: no
Python loop ever runs per token or per feature while the model is running.

Running top-k: each feature keeps a [width, N] buffer of (value, row, context); a batch entry
is a candidate only when it beats the smallest value its feature keeps, and candidates merge with
the buffer by one (feature, value, row) sort; only newcomers' contexts are written. Ties keep the
earliest row, so the result is the exact top-N by (value descending, row ascending) that a
brute-force sort over the whole pass gives.

Histogram range: a feature's histogram covers (0, R] in `hist_bins` equal bins, where R is the
feature's maximum in the first batch it fired in, doubled as often as needed when larger values
arrive (so max <= R < 2 max, or R == max). Doubling R merges bin pairs exactly: a value's bin is
ceil(v / R * bins) - 1, and halving v / R by a power of two commutes with float rounding, so the
merged counts equal a recount against the final R. A reader can therefore recompute the
histogram exactly from the final R (tests do).

Activation-bin samples: `quantile_bins` bins split the histogram range (0, R] into equal parts
(each bin is `hist_bins / quantile_bins` histogram bins, so bins merge together on doubling).
Each (feature, bin) keeps a uniform sample of `per_bin` entries: every entry draws a random key
and the bin keeps the largest keys (reservoir sampling with random keys, mergeable and
vectorised). Bins above the feature's max are empty.

Contexts: every entry kept in a buffer stores the `window` tokens either side (same model input,
same document; padding, BOS and other special tokens are never rows, so they never appear) and
that feature's activation on each of them, cut from the batch it came from.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from .capture import DEMO_DEFAULT_TOKENS, CaptureProgress, _first_n, _pad, _sorted_batches
from .datasets import DatasetSpec, as_spec, iter_texts, iter_windows
from .errors import InvalidInputError, LayerNotFoundError, StoreError
from .hooks import Detector, HookContext, StopForward
from .layers import resolve_layer
from .model import LanguageModel
from .store import Store, safe_name

FEATURES_DIR = "features"
NEG_INF = float("-inf")


@dataclass
class FeatureConfig:
    max_tokens: int | None = 200_000   # tokens of the dataset to read (None: all; the demo corpus stops at 200k)
    top_n: int = 20                    # top activating contexts per feature
    window: int = 8                    # context tokens either side of the activating token
    quantile_bins: int = 10            # activation bins with samples
    per_bin: int = 5                   # samples per activation bin
    hist_bins: int = 50                # histogram bins over (0, R]
    batch_size: int = 32
    max_length: int = 256              # tokens per text (longer texts are truncated, or packed with pack=True)
    pack: bool = False
    logit_k: int = 10                  # top and bottom output tokens per feature
    neighbours: int = 10               # decoder-cosine neighbours per feature
    label_terms: int = 3               # terms in a suggested label
    seed: int = 0                      # random keys of the bin samples
    sort_window: int = 64              # batches sorted by length together, to cut padding

    def __post_init__(self):
        for name in ("top_n", "quantile_bins", "per_bin", "hist_bins", "batch_size", "max_length", "logit_k",
                     "neighbours", "label_terms", "sort_window"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be a positive number (got {getattr(self, name)}).")
        if self.window < 0:
            raise InvalidInputError(f"window must be 0 or more tokens (got {self.window}).")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise InvalidInputError("max_tokens must be positive; leave it unset to read the whole dataset.")
        if self.hist_bins % self.quantile_bins:
            raise InvalidInputError(f"hist_bins ({self.hist_bins}) must be a multiple of quantile_bins "
                                    f"({self.quantile_bins}): each sample bin is a group of histogram bins.")


# ----- streaming model + SAE -------------------------------------------------------------------


@dataclass
class FeatureBatch:
    """The SAE activations of one model batch's real tokens, with where each row came from."""

    acts: torch.Tensor        # [n, width]
    token_ids: torch.Tensor   # [n]
    doc_index: torch.Tensor   # [n] index of the text in the dataset stream
    position: torch.Tensor    # [n] index of the token in its text's tokenization
    segment: torch.Tensor     # [n] global index of the model input (window) the row came from


class _Grab(Detector):
    """Keeps the rows selected by `keep`, then ends the forward: nothing deeper is needed."""

    def __init__(self, layer: str):
        super().__init__(layer)
        self.keep: torch.Tensor | None = None
        self.rows: torch.Tensor | None = None

    def observe(self, ctx: HookContext, activation: torch.Tensor) -> None:
        self.rows = activation[self.keep]
        raise StopForward


def _sae_device(sae: nn.Module) -> torch.device:
    return sae.W_enc.device


def iter_feature_batches(lm: LanguageModel, sae: nn.Module, dataset: DatasetSpec | str | dict,
                         config: FeatureConfig, should_stop: Callable[[], bool] | None = None,
                         ) -> Iterator[FeatureBatch]:
    """Stream the dataset through the model up to the SAE's layer and encode the real tokens.

    Deterministic for a given dataset and config, so tests can rebuild the same batches.
    """
    spec = as_spec(dataset)
    total = config.max_tokens
    if total is None and spec.kind == "demo" and spec.max_texts is None:
        total = DEMO_DEFAULT_TOKENS  # the demo corpus is endless
    layer = sae.cfg.layer
    resolve_layer(lm.model, layer)  # an unknown layer fails before any work
    grab = _Grab(layer)
    device = _sae_device(sae)
    special = torch.tensor(sorted(lm.special_token_ids), dtype=torch.long)
    windows = iter_windows(iter_texts(spec), lm.tokenizer, max_length=config.max_length, pack=config.pack)
    done = segments = 0
    with lm.hooks(grab), torch.no_grad():
        for _, batch in _sorted_batches(windows, config.batch_size, config.sort_window, (0, 0)):
            if (total is not None and done >= total) or (should_stop and should_stop()):
                return
            ids, mask, docs, positions = _pad(batch, lm.tokenizer.pad_token_id)
            keep = mask.bool() & ~torch.isin(ids, special)
            if total is not None and done + int(keep.sum()) > total:
                keep = _first_n(keep, total - done)
            grab.keep, grab.rows = keep.to(lm.device), None
            lm.forward(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device))
            if grab.rows is None:
                raise InvalidInputError(f"Layer '{layer}' was not run by the model's forward pass; "
                                        "this SAE cannot be used with this model.")
            segment = torch.arange(segments, segments + len(batch)).unsqueeze(1).expand_as(ids)
            segments += len(batch)
            n = int(keep.sum())
            if n == 0:
                continue
            done += n
            yield FeatureBatch(
                acts=sae.encode(grab.rows.to(device)),
                token_ids=ids[keep].to(device), doc_index=docs[keep].to(device),
                position=positions[keep].to(device), segment=segment[keep].to(device),
            )


# ----- vectorised accumulation ----------------------------------------------------------------------


def _descending_bits(key: torch.Tensor) -> torch.Tensor:
    """float32 keys as int64 in [0, 2**32), smaller for larger keys (an order-reversing bijection)."""
    bits = key.contiguous().view(torch.int32).long()
    ascending = torch.where(bits >= 0, bits + 2**31, 2**31 - 1 - (bits & 0x7FFFFFFF))
    return 2**32 - 1 - ascending


def group_order(group: torch.Tensor, key: torch.Tensor, tiebreak: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Order entries by group, then key descending, then `tiebreak` ascending (default: input order).

    Returns (perm, rank): perm sorts the entries, rank[i] is the place of entry perm[i] in its group.
    float32 keys sort as one packed int64 (one or two sorts instead of three).
    """
    if key.dtype != torch.float32:
        perm = torch.arange(len(key), device=key.device) if tiebreak is None else tiebreak.argsort(stable=True)
        perm = perm[key[perm].argsort(descending=True, stable=True)]
        perm = perm[group[perm].argsort(stable=True)]
    elif tiebreak is None:
        perm = ((group << 32) + _descending_bits(key)).sort(stable=True).indices
    else:  # tiebreak < 2**32 (rows); the key goes to the high 32 bits, shifted to stay in int64
        perm = (((_descending_bits(key) - 2**31) << 32) + tiebreak).sort(stable=True).indices
        perm = perm[group[perm].sort(stable=True).indices]
    sorted_group = group[perm]
    rank = torch.arange(len(perm), device=perm.device) - torch.searchsorted(sorted_group, sorted_group)
    return perm, rank


class GroupTopK:
    """Per group, the `k` entries with the largest keys (ties: the lowest row), with payloads.

    Entries stay in the slot they were written to: a merge sorts only keys of the candidates and
    of the groups they touch, and writes payloads (contexts) of newcomers only. `sorted()` orders
    every group at the end. `threshold()` (the smallest kept key, -inf while a group has room)
    lets callers drop hopeless candidates before `offer`.
    """

    def __init__(self, groups: int, k: int, span: int, device: torch.device, ties_by_row: bool = True):
        self.k, self.groups, self.ties_by_row = k, groups, ties_by_row
        self.key = torch.full((groups, k), NEG_INF, device=device)
        self.data = {
            "value": torch.zeros(groups, k, device=device),
            "row": torch.full((groups, k), -1, dtype=torch.long, device=device),
            "doc": torch.full((groups, k), -1, dtype=torch.long, device=device),
            "position": torch.full((groups, k), -1, dtype=torch.long, device=device),
            "tokens": torch.full((groups, k, span), -1, dtype=torch.int32, device=device),
            "acts": torch.zeros(groups, k, span, device=device),
        }

    def threshold(self) -> torch.Tensor:
        return self.key.min(dim=1).values

    def offer(self, group: torch.Tensor, key: torch.Tensor, row: torch.Tensor | None,
              payload: Callable[[torch.Tensor], dict[str, torch.Tensor]]) -> None:
        """Merge candidates (group, key, row) into the buffers; payload(i) gives the fields of candidates i.

        Only winners' payloads are asked for. `row` breaks ties (may be None without ties_by_row).
        """
        if len(group) == 0:
            return
        touched_mask = torch.bincount(group, minlength=self.groups) > 0
        touched = torch.nonzero(touched_mask).flatten()
        candidate_t = (torch.cumsum(touched_mask, 0) - 1)[group]  # index of each candidate's group in touched
        old = self.key[touched]
        # Kept entries at or above every candidate of their group stay (they win ties: earlier rows),
        # so only the others compete with the candidates, after the `safe` places of their group.
        best = torch.full((len(touched),), NEG_INF, device=key.device).scatter_reduce_(0, candidate_t, key, "amax")
        safe = old >= best.unsqueeze(1)
        old_t, old_s = torch.nonzero((old > NEG_INF) & ~safe, as_tuple=True)
        n_old = len(old_t)
        tiebreak = None
        if self.ties_by_row:
            tiebreak = torch.cat([self.data["row"][touched[old_t], old_s], row])
        group = torch.cat([old_t, candidate_t])
        perm, rank = group_order(group, torch.cat([old[old_t, old_s], key]), tiebreak)
        chosen = perm[rank + safe.sum(1)[group[perm]] < self.k]
        kept = chosen[chosen < n_old]
        winners = chosen[chosen >= n_old] - n_old  # in group order
        # Winners fill the slots of their group that no kept entry holds (evicted or empty ones).
        free = ~safe
        free[old_t[kept], old_s[kept]] = False
        free_t, free_s = torch.nonzero(free, as_tuple=True)
        winner_t = candidate_t[winners]
        nth = torch.arange(len(winners), device=winners.device) - torch.searchsorted(winner_t, winner_t)
        slot = touched[winner_t] * self.k + free_s[torch.searchsorted(free_t, winner_t) + nth]
        self.key.view(-1)[slot] = key[winners]
        fresh = payload(winners)
        for name, buf in self.data.items():
            buf.view(-1, *buf.shape[2:])[slot] = fresh[name].to(buf.dtype)

    def regroup(self, groups: torch.Tensor, new_groups: torch.Tensor) -> None:
        """Move the entries of `groups` [g] into `new_groups` [g] (several may merge into one)."""
        key = self.key[groups]
        t, s = torch.nonzero(key > NEG_INF, as_tuple=True)
        slots = groups[t] * self.k + s
        saved = {name: buf.view(-1, *buf.shape[2:])[slots].clone() for name, buf in self.data.items()}
        keys = key[t, s]
        self.key[groups] = NEG_INF
        self.offer(new_groups[t], keys, saved["row"], lambda i: {name: v[i] for name, v in saved.items()})

    def sorted(self) -> dict[str, torch.Tensor]:
        """Every group's entries by key descending (ties: lowest row first), empty slots last; on the CPU."""
        order = torch.arange(self.k, device=self.key.device).expand_as(self.key)
        if self.ties_by_row:
            order = self.data["row"].argsort(dim=1, stable=True)
        order = order.gather(1, self.key.gather(1, order).argsort(dim=1, descending=True, stable=True))
        out = {"key": self.key.gather(1, order)}
        for name, buf in self.data.items():
            index = order.view(*order.shape, *([1] * (buf.dim() - 2))).expand_as(buf)
            out[name] = buf.gather(1, index)
        empty = out["key"] == NEG_INF
        out["row"][empty], out["doc"][empty], out["position"][empty] = -1, -1, -1
        out["value"][empty], out["tokens"][empty], out["acts"][empty] = 0, -1, 0
        return {name: t.cpu() for name, t in out.items()}


class FeatureAccumulator:
    """Everything the feature pass keeps, updated batch by batch (see the module docstring)."""

    def __init__(self, width: int, config: FeatureConfig, device: torch.device | str = "cpu"):
        self.width, self.config = width, config
        device = torch.device(device)
        span = 2 * config.window + 1
        self.tokens = 0
        self.count = torch.zeros(width, dtype=torch.long, device=device)
        self.total = torch.zeros(width, dtype=torch.float64, device=device)
        self.max = torch.zeros(width, device=device)
        self.hist = torch.zeros(width, config.hist_bins, dtype=torch.long, device=device)
        self.range = torch.zeros(width, device=device)  # R per feature; 0 until it fires
        self.token_counts = torch.zeros(0, dtype=torch.long, device=device)
        self.top = GroupTopK(width, config.top_n, span, device)
        # Sample keys are random, so ties (and the row order that breaks them) do not matter.
        self.samples = GroupTopK(width * config.quantile_bins, config.per_bin, span, device, ties_by_row=False)
        self.offsets = torch.arange(-config.window, config.window + 1, device=device)
        self.generator = torch.Generator(device=device).manual_seed(config.seed)

    def add(self, batch: FeatureBatch) -> None:
        f = batch.acts
        rows, feats, values = firing(f)
        self.count += torch.bincount(feats, minlength=self.width)
        self.total.index_add_(0, feats, values.double())
        batch_max = torch.zeros_like(self.max).scatter_reduce_(0, feats, values, "amax")
        self.max = torch.maximum(self.max, batch_max)
        self._update_ranges(batch_max)
        hbin = hist_bin(values, self.range[feats], self.config.hist_bins)
        self.hist.view(-1).index_add_(0, feats * self.config.hist_bins + hbin, torch.ones_like(hbin))
        ids = batch.token_ids
        if len(ids) and int(ids.max()) >= len(self.token_counts):
            grown = torch.zeros(int(ids.max()) + 1, dtype=torch.long, device=ids.device)
            grown[: len(self.token_counts)] = self.token_counts
            self.token_counts = grown
        self.token_counts += torch.bincount(ids, minlength=len(self.token_counts))

        def cut(keep: torch.Tensor) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
            return lambda i: self._contexts(batch, rows[keep][i], feats[keep][i], values[keep][i])

        keep = values > self.top.threshold()[feats]
        self.top.offer(feats[keep], values[keep], rows[keep] + self.tokens, cut(keep))
        q = self.config.quantile_bins
        group = feats * q + hbin // (self.config.hist_bins // q)
        key = torch.rand(len(values), generator=self.generator, device=values.device)
        keep = key > self.samples.threshold()[group]
        self.samples.offer(group[keep], key[keep], None, cut(keep))
        self.tokens += len(f)

    def _update_ranges(self, batch_max: torch.Tensor) -> None:
        first = (self.range == 0) & (batch_max > 0)
        self.range[first] = batch_max[first]
        grow = torch.nonzero(batch_max > self.range).flatten()
        if len(grow) == 0:
            return
        old, new_max = self.range[grow], batch_max[grow]
        # Smallest doubling count with old * 2**shift >= max (ldexp is exact, log2 only a guess).
        shift = torch.ceil(torch.log2(new_max / old)).long().clamp(min=1)
        shift -= ((shift > 1) & (torch.ldexp(old, shift - 1) >= new_max)).long()
        shift += (torch.ldexp(old, shift) < new_max).long()
        shift = shift.clamp(max=62)
        bins = self.config.hist_bins
        merged = (torch.arange(bins, device=grow.device).unsqueeze(0) >> shift.unsqueeze(1))
        self.hist[grow] = torch.zeros_like(self.hist[grow]).scatter_add_(1, merged, self.hist[grow])
        q = self.config.quantile_bins
        sample_bins = torch.arange(q, device=grow.device).unsqueeze(0)
        self.samples.regroup((grow.unsqueeze(1) * q + sample_bins).flatten(),
                             (grow.unsqueeze(1) * q + (sample_bins >> shift.unsqueeze(1))).flatten())
        self.range[grow] = torch.ldexp(old, shift)

    def _contexts(self, batch: FeatureBatch, rows: torch.Tensor, feats: torch.Tensor,
                  values: torch.Tensor) -> dict[str, torch.Tensor]:
        """Context windows of entries (rows of this batch, features): same input, same document."""
        n = len(batch.token_ids)
        around = rows.unsqueeze(1) + self.offsets
        inside = (around >= 0) & (around < n)
        around = around.clamp(0, n - 1)
        same = (inside & (batch.segment[around] == batch.segment[rows].unsqueeze(1))
                & (batch.doc_index[around] == batch.doc_index[rows].unsqueeze(1)))
        return {
            "value": values,
            "row": rows + self.tokens,
            "doc": batch.doc_index[rows],
            "position": batch.position[rows],
            "tokens": torch.where(same, batch.token_ids[around], -1),
            "acts": torch.where(same, batch.acts.view(-1)[around * batch.acts.shape[1] + feats.unsqueeze(1)], 0.0),
        }


def firing(acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, feature, value) of every positive entry of acts [n, width], in row-major order."""
    if acts.device.type != "cpu":
        rows, feats = torch.nonzero(acts > 0, as_tuple=True)
        return rows, feats, acts[rows, feats]
    # On the CPU numpy finds non-zeros about 3x faster than torch.nonzero (this is the pass's hot spot).
    flat = acts.detach().float().numpy().ravel()
    index = np.flatnonzero(flat > 0)
    values = torch.from_numpy(flat[index])
    index = torch.from_numpy(index)
    return index // acts.shape[1], index % acts.shape[1], values


def hist_bin(values: torch.Tensor, ranges: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin of each positive value in `bins` equal bins over (0, range]: ceil(v / range * bins) - 1."""
    return (torch.ceil(values / ranges * bins).long() - 1).clamp(0, bins - 1)


# ----- logit effects and neighbours ---------------------------------------------------------------


def _final_norm(lm: LanguageModel, layer: str) -> nn.Module | None:
    """The final norm between the SAE's layer and the unembedding (None after it, or if absent)."""
    try:
        norm = resolve_layer(lm.model, "final_norm")
    except LayerNotFoundError:  # no final norm in this architecture
        return None
    return None if resolve_layer(lm.model, layer).module_name == norm.module_name else norm.module


@torch.no_grad()
def norm_directions(norm: nn.Module | None, directions: torch.Tensor) -> torch.Tensor:
    """Directions as the final norm passes them on, linearised (see `logit_effects`).

    The norm's kind is probed, not looked up: a LayerNorm maps a constant vector to its bias
    (it centres), an RMS norm maps ones to its gain (this also covers Gemma's 1 + weight).
    """
    if norm is None:
        return directions
    param = next(norm.parameters(), None)
    d = directions.shape[1]
    probe = torch.stack([torch.ones(d), torch.zeros(d)]).to(
        param.device if param is not None else directions.device,
        param.dtype if param is not None else torch.float32)
    ones, zeros = norm(probe.unsqueeze(0))[0].float().to(directions.device)
    gain = ones - zeros
    if gain.abs().max() <= 1e-4 * max(float(ones.abs().max()), 1.0):  # centring: a LayerNorm
        weight = getattr(norm, "weight", None)
        gain = torch.ones_like(gain) if weight is None else weight.detach().float().to(directions.device)
        directions = directions - directions.mean(dim=1, keepdim=True)
    return directions * gain


@torch.no_grad()
def logit_effects(lm: LanguageModel, sae: nn.Module, k: int = 10, chunk: int = 256
                  ) -> dict[str, torch.Tensor] | None:
    """Top and bottom `k` output tokens of each decoder direction (W_dec through the final norm times W_U).

    Direct-path approximation: the norm is linearised around the token's own residual, whose
    1/scale is a positive factor per token; it is left out, so values rank tokens within a feature
    and compare features only roughly. A LayerNorm's centring is applied to the direction and its
    bias (the same for every feature) is dropped. None when the unembedding does not read this width.
    """
    unembed = lm.model.get_output_embeddings()
    if unembed is None or unembed.weight.shape[1] != sae.W_dec.shape[1]:
        return None
    W_U = unembed.weight.detach().float()
    norm = _final_norm(lm, sae.cfg.layer)
    k = min(k, W_U.shape[0])
    out: dict[str, list[torch.Tensor]] = {"pos_ids": [], "pos_values": [], "neg_ids": [], "neg_values": []}
    for start in range(0, sae.W_dec.shape[0], chunk):
        dirs = norm_directions(norm, sae.W_dec[start:start + chunk].detach().float().to(W_U.device))
        logits = dirs @ W_U.T
        top, bottom = logits.topk(k, dim=1), logits.topk(k, dim=1, largest=False)
        out["pos_ids"].append(top.indices.cpu())
        out["pos_values"].append(top.values.cpu())
        out["neg_ids"].append(bottom.indices.cpu())
        out["neg_values"].append(bottom.values.cpu())
    return {name: torch.cat(parts) for name, parts in out.items()}


@torch.no_grad()
def decoder_neighbours(W_dec: torch.Tensor, k: int = 10, chunk: int = 1024) -> dict[str, torch.Tensor]:
    """The `k` features whose decoder directions have the highest cosine with each feature's."""
    W = torch.nn.functional.normalize(W_dec.detach().float(), dim=1)
    k = min(k, len(W) - 1)
    ids, cos = [], []
    for start in range(0, len(W), chunk):
        sims = W[start:start + chunk] @ W.T
        rows = torch.arange(len(sims), device=W.device)
        sims[rows, rows + start] = NEG_INF  # not its own neighbour
        top = sims.topk(k, dim=1)
        ids.append(top.indices.cpu())
        cos.append(top.values.cpu())
    return {"ids": torch.cat(ids), "cosine": torch.cat(cos)}


# ----- labels -----------------------------------------------------------------------------------------


def normalize_term(token: str) -> str:
    """A token or word as a label term: no word-boundary markers or edge spaces, lower case."""
    return token.replace("Ġ", " ").replace("▁", " ").replace("Ċ", " ").strip().lower()


MAX_WORD_TOKENS = 8  # longer words are cut (they are rare, and the label only needs a readable term)


def _word_flags(strings: dict[int, str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token id: does it start a word (leading space or marker); is it a word of its own
    (punctuation or whitespace only)? Unknown ids are words of their own."""
    starts = torch.ones(size, dtype=torch.bool)
    alone = torch.ones(size, dtype=torch.bool)
    for i, s in strings.items():
        if 0 <= i < size:
            text = s.replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\n")
            alone[i] = not any(ch.isalnum() for ch in text)
            starts[i] = text[:1].isspace() or bool(alone[i])
    return starts, alone


def suggest_labels(tokens: torch.Tensor, acts: torch.Tensor, strings: dict[int, str],
                   token_counts: torch.Tensor, n_terms: int = 3) -> list[list[str]]:
    """Label terms per feature from its contexts [width, m, span]: activation mass times rarity.

    Tokens are joined into words (a word starts at a token with a leading space, and punctuation
    stands alone), so sub-word pieces never become terms. A word the feature fires on scores the
    feature's summed activation over its tokens; a term (words equal after `normalize_term`) sums
    its words' scores times log(total tokens / the term's count in the pass), so words that are
    everywhere ("the", ".") lose to the distinctive ones. A word's count is taken as its rarest
    token's count.
    """
    width, m, span = tokens.shape
    labels: list[list[str]] = [[] for _ in range(width)]
    tokens, acts = tokens.cpu().long(), acts.cpu().double()
    size = max(max(strings, default=0), int(tokens.max()) if tokens.numel() else 0) + 1
    starts, alone = _word_flags(strings, size)
    previous = torch.cat([torch.full_like(tokens[..., :1], -1), tokens[..., :-1]], dim=-1)
    boundary = (tokens < 0) | (previous < 0) | starts[tokens.clamp(min=0)] | alone[previous.clamp(min=0)]
    word = boundary.long().cumsum(-1) - 1 + torch.arange(width * m).view(width, m, 1) * span  # unique per context
    valid = tokens >= 0
    score = torch.zeros(width * m * span, dtype=torch.float64).index_add_(0, word[valid], acts[valid])
    fired = valid & (score[word] > 0)
    if not fired.any():
        return labels
    key, token = word[fired], tokens[fired]  # in word order
    words, inverse, lengths = torch.unique_consecutive(key, return_inverse=True, return_counts=True)
    nth = torch.arange(len(key)) - (torch.cumsum(lengths, 0) - lengths)[inverse]
    keep = nth < MAX_WORD_TOKENS
    sequences = torch.full((len(words), MAX_WORD_TOKENS), -1, dtype=torch.long)
    sequences[inverse[keep], nth[keep]] = token[keep]
    unique, which = torch.unique(sequences, dim=0, return_inverse=True)
    counts = token_counts.cpu().double()
    counts = torch.cat([counts, torch.zeros(max(size - len(counts), 0), dtype=torch.float64)])
    rarest = torch.where(unique >= 0, counts[unique.clamp(min=0)], float("inf")).min(dim=1).values
    term_index: dict[str, int] = {}
    term_of_unique = torch.tensor([
        term_index.setdefault(term, len(term_index)) if (term := normalize_term(
            "".join(strings.get(i, "") for i in row if i >= 0))) else -1
        for row in unique.tolist()], dtype=torch.long)
    terms = list(term_index)
    if not terms:
        return labels
    named = term_of_unique >= 0
    term_counts = torch.zeros(len(terms), dtype=torch.float64).index_add_(0, term_of_unique[named], rarest[named])
    idf = torch.log((counts.sum() + 1) / (term_counts + 1))
    term = term_of_unique[which]
    feature = words // (m * span)
    ok = term >= 0
    pair, pair_of_word = torch.unique(feature[ok] * len(terms) + term[ok], return_inverse=True)
    pair_score = torch.zeros(len(pair), dtype=torch.float64).index_add_(0, pair_of_word, score[words[ok]])
    pair_score *= idf[pair % len(terms)]
    perm, rank = group_order(pair // len(terms), pair_score)
    for p in pair[perm[rank < n_terms]].tolist():
        labels[p // len(terms)].append(terms[p % len(terms)])
    return labels


def token_strings(tokenizer, ids) -> dict[int, str]:
    """Display string of each token id, decoded on its own."""
    return {int(i): tokenizer.decode([int(i)]) for i in ids}


# ----- the pass and its files ------------------------------------------------------------------------------


def compute_features(
    lm: LanguageModel,
    sae: nn.Module,
    dataset: DatasetSpec | str | dict,
    store: Store,
    sae_name: str,
    config: FeatureConfig | None = None,
    progress: Callable[[CaptureProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """One pass of `dataset` through model + SAE; saves saes/<sae_name>/features/ and returns a summary.

    Summary: features (width), alive (features that fired), tokens, tokens_per_s (of the streamed
    pass), seconds (everything, saving included), complete (False when should_stop ended it).
    """
    config = config or FeatureConfig()
    spec = as_spec(dataset)
    sae_name = safe_name(sae_name)
    width = sae.W_dec.shape[0]
    acc = FeatureAccumulator(width, config, _sae_device(sae))
    total = config.max_tokens or (DEMO_DEFAULT_TOKENS if spec.kind == "demo" and spec.max_texts is None else None)
    start = time.perf_counter()
    for batch in iter_feature_batches(lm, sae, spec, config, should_stop):
        acc.add(batch)
        if progress:
            rate = acc.tokens / max(time.perf_counter() - start, 1e-9)
            progress(CaptureProgress(acc.tokens, total, rate, (total - acc.tokens) / rate if total else None))
    if acc.tokens == 0:
        raise InvalidInputError(f"No tokens were read from {spec.describe()}: every text was empty or special tokens.")
    pass_seconds = time.perf_counter() - start
    stopped = bool(should_stop and should_stop())
    summary = save_features(store, sae_name, acc, lm, sae, spec, pass_seconds, complete=not stopped)
    return {**summary, "seconds": time.perf_counter() - start}


def save_features(store: Store, sae_name: str, acc: FeatureAccumulator, lm: LanguageModel, sae: nn.Module,
                  spec: DatasetSpec, pass_seconds: float, complete: bool = True) -> dict:
    """Write the accumulated results (files first, meta.json with their checksums last)."""
    config, base = acc.config, f"saes/{sae_name}/{FEATURES_DIR}"
    top, samples = acc.top.sorted(), acc.samples.sorted()
    q, span = config.quantile_bins, 2 * config.window + 1
    samples = {name: t.view(acc.width, q, config.per_bin, *t.shape[2:]) for name, t in samples.items()}
    logits = logit_effects(lm, sae, config.logit_k)
    neighbours = decoder_neighbours(sae.W_dec, config.neighbours)
    used = torch.cat([top["tokens"].flatten(), samples["tokens"].flatten(),
                      *([logits["pos_ids"].flatten(), logits["neg_ids"].flatten()] if logits else [])])
    strings = token_strings(lm.tokenizer, torch.unique(used[used >= 0]).tolist())
    labels = suggest_labels(
        torch.cat([top["tokens"], samples["tokens"].view(acc.width, -1, span)], dim=1),
        torch.cat([top["acts"], samples["acts"].view(acc.width, -1, span)], dim=1),
        strings, acc.token_counts, config.label_terms)
    count, tokens = acc.count.cpu(), acc.tokens
    stats = pd.DataFrame({
        "feature": torch.arange(acc.width).numpy(),
        "density": (count.double() / tokens).numpy(),
        "count": count.numpy(),
        "mean_activation": (acc.total.cpu() / count.clamp(min=1)).float().numpy(),
        "max_activation": acc.max.cpu().numpy(),
        "label": [" / ".join(terms) for terms in labels],
        "top_terms": labels,
    })
    files = {
        "stats": store.write_table(f"{base}/stats.parquet", stats),
        "top": store.write_tensors(f"{base}/top.safetensors", top),
        "samples": store.write_tensors(f"{base}/samples.safetensors", samples),
        "histograms": store.write_tensors(f"{base}/histograms.safetensors",
                                          {"counts": acc.hist.cpu(), "range": acc.range.cpu()}),
        "neighbours": store.write_tensors(f"{base}/neighbours.safetensors", neighbours),
        "tokens": store.write_json(f"{base}/tokens.json", {"ids": list(strings), "strings": list(strings.values())}),
    }
    if logits is not None:
        files["logits"] = store.write_tensors(f"{base}/logits.safetensors", logits)
    alive = int((count > 0).sum())
    summary = {"features": acc.width, "alive": alive, "tokens": tokens,
               "tokens_per_s": tokens / max(pass_seconds, 1e-9)}
    store.write_json(f"{base}/meta.json", {
        **summary, "sae": sae_name, "sae_weights": _weights_sha(store, sae_name),
        "model": lm.name, "layer": sae.cfg.layer, "dataset": spec.to_dict(),
        "config": asdict(config), "complete": complete, "pass_seconds": pass_seconds,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": {name: record.to_dict() for name, record in files.items()},
    })
    return {**summary, "complete": complete}


# ----- reading the results --------------------------------------------------------------------------


@dataclass
class FeatureData:
    """All feature-pass files of one SAE, loaded (checksums verified)."""

    meta: dict
    stats: pd.DataFrame
    top: dict[str, torch.Tensor]
    samples: dict[str, torch.Tensor]
    histograms: dict[str, torch.Tensor]
    neighbours: dict[str, torch.Tensor]
    logits: dict[str, torch.Tensor] | None
    strings: dict[int, str]


def _weights_sha(store: Store, sae_name: str) -> str | None:
    """Checksum of the SAE's saved weights (None when it is not saved in the store)."""
    path = f"saes/{safe_name(sae_name)}/config.json"
    return (store.read_json(path).get("weights") or {}).get("sha256") if store.exists(path) else None


def _meta(store: Store, sae_name: str) -> dict:
    path = f"saes/{safe_name(sae_name)}/{FEATURES_DIR}/meta.json"
    if not store.exists(path):
        raise StoreError(f"SAE '{sae_name}' has no feature dashboards in {store.root} yet; compute them with "
                         f"`microw features --sae {sae_name}` or on the Features page.")
    meta = store.read_json(path)
    current = _weights_sha(store, sae_name)
    if current is not None and meta.get("sae_weights") not in (None, current):
        raise StoreError(f"The feature dashboards of SAE '{sae_name}' belong to earlier weights of it (it was "
                         f"trained again); recompute them with `microw features --sae {sae_name}`.")
    return meta


def load_features(store: Store, sae_name: str) -> FeatureData:
    """The feature-pass results of `sae_name` (cached until they are recomputed)."""
    meta = _meta(store, sae_name)
    return _load_cached(store.root, safe_name(sae_name), meta["created"], meta["files"]["stats"]["sha256"])


@functools.lru_cache(maxsize=4)
def _load_cached(root, sae_name: str, created: str, stats_sha: str) -> FeatureData:
    store = Store(root)
    meta = _meta(store, sae_name)
    files = meta["files"]

    def tensors(name: str) -> dict[str, torch.Tensor]:
        return store.read_tensors(files[name]["path"], files[name]["sha256"])

    vocab = store.read_json(files["tokens"]["path"], files["tokens"]["sha256"])
    return FeatureData(
        meta=meta, stats=store.read_table(files["stats"]["path"], files["stats"]["sha256"]),
        top=tensors("top"), samples=tensors("samples"), histograms=tensors("histograms"),
        neighbours=tensors("neighbours"), logits=tensors("logits") if "logits" in files else None,
        strings=dict(zip(vocab["ids"], vocab["strings"])),
    )


def load_feature_table(store: Store, sae_name: str) -> pd.DataFrame:
    """One row per feature: feature, density, count, mean_activation (when active), max_activation, label, top_terms."""
    return load_features(store, sae_name).stats


def _context(data: FeatureData, fields: dict[str, torch.Tensor], index: tuple) -> dict:
    tokens, acts = fields["tokens"][index], fields["acts"][index]
    valid = tokens >= 0
    centre = len(tokens) // 2
    return {
        "tokens": [data.strings[int(t)] for t in tokens[valid]],
        "token_ids": tokens[valid].tolist(),
        "activations": acts[valid].tolist(),
        "highlight": int(valid[:centre].sum()),
        "doc_index": int(fields["doc"][index]),
        "position": int(fields["position"][index]),
        "value": float(fields["value"][index]),
    }


def feature_card(store: Store, sae_name: str, feature_id: int) -> dict:
    """Everything the dashboard shows for one feature (see the module docstring for definitions)."""
    data = load_features(store, sae_name)
    width = len(data.stats)
    if not 0 <= feature_id < width:
        raise InvalidInputError(f"Feature {feature_id} does not exist: SAE '{sae_name}' has features 0 to {width - 1}.")
    row = data.stats.iloc[feature_id]
    f = feature_id
    top = [_context(data, data.top, (f, i)) for i in range(data.top["key"].shape[1]) if data.top["key"][f, i] > NEG_INF]
    R = float(data.histograms["range"][f])
    q = data.samples["key"].shape[1]
    samples = [{
        "bin": b, "low": R * b / q, "high": R * (b + 1) / q,
        "samples": [_context(data, data.samples, (f, b, i)) for i in range(data.samples["key"].shape[2])
                    if data.samples["key"][f, b, i] > NEG_INF],
    } for b in range(q)]
    counts = data.histograms["counts"][f]
    card = {
        "id": f, "density": float(row["density"]), "count": int(row["count"]),
        "mean_activation": float(row["mean_activation"]), "max_activation": float(row["max_activation"]),
        "label": row["label"], "top_terms": list(row["top_terms"]),
        "top_contexts": top, "quantile_samples": samples,
        "histogram": {"edges": [R * i / len(counts) for i in range(len(counts) + 1)], "counts": counts.tolist()},
        "logits_pos": [], "logits_neg": [],
        "neighbours": list(zip(data.neighbours["ids"][f].tolist(), data.neighbours["cosine"][f].tolist())),
    }
    if data.logits is not None:
        for sign in ("pos", "neg"):
            card[f"logits_{sign}"] = [(data.strings[i], v) for i, v in zip(
                data.logits[f"{sign}_ids"][f].tolist(), data.logits[f"{sign}_values"][f].tolist())]
    return card


# ----- what fires on a text -----------------------------------------------------------------------------


@torch.no_grad()
def encode_text(lm: LanguageModel, sae: nn.Module, text: str, max_length: int | None = None
                ) -> tuple[list[int], list[int], torch.Tensor]:
    """(token ids, positions, SAE activations [n, width]) of the real (non-special) tokens of `text`."""
    batch = lm.tokenize([text], max_length=max_length)
    ids = batch["input_ids"][0]
    keep = ~torch.isin(ids, torch.tensor(sorted(lm.special_token_ids), dtype=ids.dtype, device=ids.device))
    grab = _Grab(sae.cfg.layer)
    grab.keep = keep.unsqueeze(0)
    with lm.hooks(grab):
        lm.forward(**batch)
    positions = torch.nonzero(keep).flatten()
    return ids[keep].tolist(), positions.tolist(), sae.encode(grab.rows.to(_sae_device(sae)))


def what_fires(lm: LanguageModel, sae: nn.Module, text: str, top_k: int = 5) -> list[dict]:
    """Per token of `text`: its strongest features, [{token, position, features: [(id, activation)]}]."""
    if top_k < 1:
        raise InvalidInputError("top_k must be at least 1.")
    ids, positions, acts = encode_text(lm, sae, text)
    top = acts.topk(min(top_k, acts.shape[1]), dim=1)
    out = []
    for i, (token, position) in enumerate(zip(ids, positions)):
        pairs = [(int(f), float(v)) for f, v in zip(top.indices[i].tolist(), top.values[i].tolist()) if v > 0]
        out.append({"token": lm.tokenizer.decode([token]), "position": position, "features": pairs})
    return out
