"""The concept dictionary (names for SAE features) and its check against planted ground truth.

ConceptDictionary: per SAE, saved at saes/<name>/concepts.json. Every edit re-reads the file
under an exclusive lock (flock on saes/<name>/concepts.lock), changes only the edited feature
and writes atomically, so two editors (two browser tabs, the app and a script) never lose each
other's work: the last write wins for the fields it sets, everything else is kept.

evaluate_concepts: how well single SAE features (and, as a baseline, single neurons of the same
layer) detect the demo corpus's planted concepts, token by token.
"""

from __future__ import annotations

import csv
import io
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Iterator

import torch
from torch import nn

from .errors import InvalidInputError, StoreError
from .features import (
    _Grab, _sae_device, group_order, load_features, normalize_term, suggest_labels, token_strings,
)
from .model import LanguageModel
from .store import Store, safe_name

try:  # POSIX
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

CSV_COLUMNS = ("feature", "name", "description", "tags", "confidence", "updated")


@dataclass
class Concept:
    feature: int
    name: str
    description: str = ""
    tags: list[str] = field(default_factory=list)
    confidence: float = 1.0
    updated: str = ""  # ISO time of the last edit

    def to_dict(self) -> dict:
        return asdict(self)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _tags(value) -> list[str]:
    """Tags from a list or a ';'/','-separated string: stripped, non-empty, each once."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.replace(",", ";").split(";")
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
        raise InvalidInputError(f"tags must be a list of strings or a ';'-separated string (got {value!r}).")
    parts = [p.strip() for t in value for p in t.replace(",", ";").split(";")]
    return list(dict.fromkeys(p for p in parts if p))


def _feature_id(feature, width: int | None) -> int:
    try:
        feature = int(feature)
    except (TypeError, ValueError):
        raise InvalidInputError(f"A feature id must be a whole number (got {feature!r}).") from None
    if feature < 0 or (width is not None and feature >= width):
        limit = f" from 0 to {width - 1}" if width is not None else " of 0 or more"
        raise InvalidInputError(f"Feature {feature} does not exist; use a feature id{limit}.")
    return feature


def _checked(feature, values: dict, width: int | None) -> Concept:
    """A Concept from user values, every field validated."""
    known = {f.name for f in fields(Concept)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidInputError(f"Unknown concept field(s) {', '.join(unknown)}; use {', '.join(sorted(known))}.")
    feature = _feature_id(feature, width)
    name = str(values.get("name") or "").strip()
    if not name:
        raise InvalidInputError(f"Give feature {feature} a name (a few words saying what it detects).")
    try:
        confidence = float(values.get("confidence", 1.0))
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"confidence must be a number from 0 to 1 (got {values.get('confidence')!r}).") from None
    if not 0.0 <= confidence <= 1.0:
        raise InvalidInputError(f"confidence must be from 0 to 1 (got {confidence}).")
    return Concept(feature=feature, name=name, description=str(values.get("description") or "").strip(),
                   tags=_tags(values.get("tags")), confidence=confidence, updated=str(values.get("updated") or ""))


@contextmanager
def _file_lock(path) -> Iterator[None]:
    """An exclusive lock held on `path` (a lock file next to the data) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        else:
            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            else:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)


@dataclass
class TokenMatch:
    """A feature whose top activations fall on a given token."""

    feature: int
    score: float            # summed activation of its top contexts whose highlighted token matches
    label: str              # the suggested label from the feature pass
    concept: Concept | None


class ConceptDictionary:
    """Names, descriptions, tags and confidence for the features of one SAE."""

    def __init__(self, store: Store, sae_name: str):
        self.store, self.sae_name = store, safe_name(sae_name)
        if not store.exists(f"saes/{self.sae_name}/config.json"):
            raise StoreError(f"There is no SAE '{sae_name}' in {store.root}; train or import it first.")
        self.width: int | None = store.read_json(f"saes/{self.sae_name}/config.json").get("width")
        self._path = f"saes/{self.sae_name}/concepts.json"
        self._lock = store.path("saes", self.sae_name, "concepts.lock")
        self._concepts: dict[int, Concept] = {}
        self.reload()

    @classmethod
    def load(cls, store: Store, sae_name: str) -> ConceptDictionary:
        return cls(store, sae_name)

    # ----- reading ------------------------------------------------------------------------------

    def _read(self) -> dict[int, Concept]:
        if not self.store.exists(self._path):
            return {}
        data = self.store.read_json(self._path)
        return {int(c["feature"]): Concept(**c) for c in data.get("concepts", [])}

    def reload(self) -> None:
        """Re-read the file (edits from elsewhere become visible)."""
        self._concepts = self._read()

    @property
    def entries(self) -> list[Concept]:
        return [self._concepts[f] for f in sorted(self._concepts)]

    def get(self, feature: int) -> Concept | None:
        return self._concepts.get(int(feature))

    def __len__(self) -> int:
        return len(self._concepts)

    # ----- editing (merge on write) ----------------------------------------------------------------

    def _write(self, change) -> None:
        """Under the lock: re-read the file, apply `change(concepts)` to it, write it atomically."""
        with _file_lock(self._lock):
            concepts = self._read()
            change(concepts)
            self.store.write_json(self._path, {
                "sae": self.sae_name, "version": 1,
                "concepts": [concepts[f].to_dict() for f in sorted(concepts)],
            })
            self._concepts = concepts

    def set(self, feature: int, **values) -> Concept:
        """Create or edit the concept of `feature`; fields not given keep their saved values."""
        feature = _feature_id(feature, self.width)
        values.pop("feature", None)
        result: list[Concept] = []

        def change(concepts: dict[int, Concept]) -> None:
            base = concepts[feature].to_dict() if feature in concepts else {}
            merged = {**base, **values, "updated": _now()}
            merged.pop("feature", None)
            concept = _checked(feature, merged, self.width)
            concepts[concept.feature] = concept
            result.append(concept)

        self._write(change)
        return result[0]

    def remove(self, feature: int) -> None:
        feature = _feature_id(feature, self.width)
        if feature not in self._read():
            raise InvalidInputError(f"Feature {feature} has no concept in the dictionary of '{self.sae_name}'.")
        self._write(lambda concepts: concepts.pop(feature, None))

    def update(self, concepts: list[Concept]) -> int:
        """Save whole entries (an import): each replaces its feature's entry. Returns how many."""
        checked = [_checked(c.feature, {k: v for k, v in c.to_dict().items() if k != "feature"}, self.width)
                   for c in concepts]
        for c in checked:
            c.updated = c.updated or _now()

        def change(current: dict[int, Concept]) -> None:
            current.update({c.feature: c for c in checked})

        self._write(change)
        return len(checked)

    # ----- search ------------------------------------------------------------------------------------

    def search(self, query: str) -> list[Concept]:
        """Concepts whose name (best), tags or description contain `query` (case-insensitive)."""
        q = query.strip().lower()
        if not q:
            return self.entries
        scored = []
        for c in self.entries:
            score = 3 * (q == c.name.lower()) + 2 * (q in c.name.lower()) + any(q in t.lower() for t in c.tags)
            score += 0.5 * (q in c.description.lower())
            if score:
                scored.append((-score, c.feature, c))
        return [c for *_, c in sorted(scored, key=lambda s: s[:2])]

    def search_token(self, token: str, limit: int = 20) -> list[TokenMatch]:
        """Features whose top contexts peak on `token` (from the feature cards), strongest first."""
        term = normalize_term(token)
        if not term:
            raise InvalidInputError("Give a token to search for, e.g. 'beach'.")
        data = load_features(self.store, self.sae_name)
        ids = [i for i, s in data.strings.items() if normalize_term(s) == term]
        if not ids:
            return []
        centre = data.top["tokens"].shape[2] // 2
        hits = torch.isin(data.top["tokens"][:, :, centre], torch.tensor(ids, dtype=data.top["tokens"].dtype))
        score = (data.top["value"] * hits).sum(1)
        order = torch.argsort(score, descending=True, stable=True)[:limit]
        labels = data.stats["label"]
        return [TokenMatch(int(f), float(score[f]), labels.iloc[int(f)], self.get(int(f)))
                for f in order.tolist() if score[f] > 0]

    # ----- import / export ---------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps({"sae": self.sae_name, "concepts": [c.to_dict() for c in self.entries]}, indent=2)

    def from_json(self, text: str) -> int:
        """Import concepts from `to_json` output (or a plain list of concept objects)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidInputError(f"The concept file is not valid JSON ({e.msg} at line {e.lineno}).") from None
        rows = data.get("concepts") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise InvalidInputError(
                'Expected {"concepts": [{"feature": 3, "name": "..."}, ...]} or a list of such objects.')
        return self.update([self._row(r, f"concept {i + 1}") for i, r in enumerate(rows)])

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for c in self.entries:
            writer.writerow([c.feature, c.name, c.description, "; ".join(c.tags), repr(c.confidence), c.updated])
        return out.getvalue()

    def from_csv(self, text: str) -> int:
        """Import concepts from a CSV with columns feature, name (and optionally the other fields)."""
        reader = csv.DictReader(io.StringIO(text))
        missing = {"feature", "name"} - set(reader.fieldnames or [])
        if missing:
            raise InvalidInputError(
                f"The CSV needs columns {', '.join(CSV_COLUMNS)}; it lacks {', '.join(sorted(missing))}.")
        rows = [{k: v for k, v in row.items() if k in CSV_COLUMNS and v not in (None, "")} for row in reader]
        return self.update([self._row(r, f"CSV line {i + 2}") for i, r in enumerate(rows)])

    def _row(self, row: dict, where: str) -> Concept:
        try:
            return _checked(row.get("feature"), {k: v for k, v in row.items() if k != "feature"}, self.width)
        except InvalidInputError as e:
            raise InvalidInputError(f"{where}: {e}") from None


# ----- ground-truth evaluation ------------------------------------------------------------------------------


def best_f1_sorted(col: torch.Tensor, row: torch.Tensor, value: torch.Tensor, n_cols: int, labels: torch.Tensor,
                   chunk: int = 1 << 19) -> tuple[torch.Tensor, torch.Tensor]:
    """Best F1 of each column as a detector of each label, over all thresholds.

    Entries (col, row, value) must be sorted by column, then value descending. A column predicts
    label c on a row when its value there is >= the threshold; rows without an entry are never
    predicted. labels: bool [rows, C]. Returns (f1 [n_cols, C], threshold [n_cols, C]); a column
    with no useful threshold has F1 0 and threshold NaN.
    """
    n_labels = labels.shape[1]
    positives = labels.sum(0).to(torch.float64)
    best = torch.zeros(n_cols, n_labels, dtype=torch.float64)
    threshold = torch.full((n_cols, n_labels), float("nan"), dtype=value.dtype)
    start, m = 0, len(col)
    while start < m:
        end = min(start + chunk, m)
        if end < m:  # columns never straddle chunks
            end = int(torch.searchsorted(col, col[end - 1], right=True))
            if end == start:
                end = int(torch.searchsorted(col, col[start], right=True))
        c, v = col[start:end], value[start:end]
        tp = labels[row[start:end]].to(torch.int32).cumsum(0)
        first = torch.searchsorted(c, c)  # start of each entry's column
        tp = tp - torch.where((first > 0).unsqueeze(1), tp[(first - 1).clamp(min=0)], 0)
        predicted = (torch.arange(len(c)) - first + 1).to(torch.float64)
        f1 = 2 * tp.to(torch.float64) / (predicted.unsqueeze(1) + positives)
        # A threshold can only sit between distinct values: score the last entry of each tie.
        last = torch.ones(len(c), dtype=torch.bool)
        last[:-1] = (c[1:] != c[:-1]) | (v[1:] != v[:-1])
        f1 = torch.where(last.unsqueeze(1), f1, -1.0)
        index = c.unsqueeze(1).expand(-1, n_labels)
        best.scatter_reduce_(0, index, f1, "amax")
        at_best = (f1 == best[c]) & (f1 > 0)
        threshold.scatter_reduce_(0, index, torch.where(at_best, v.unsqueeze(1), float("-inf")).to(value.dtype),
                                  "amax", include_self=False)
        start = end
    threshold[best == 0] = float("nan")
    threshold[torch.isinf(threshold)] = float("nan")
    return best, threshold


def best_f1_sparse(col: torch.Tensor, row: torch.Tensor, value: torch.Tensor, n_cols: int,
                   labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`best_f1_sorted` for entries in any order (e.g. the non-zero activations of SAE features)."""
    perm, _ = group_order(col, value)
    return best_f1_sorted(col[perm], row[perm], value[perm], n_cols, labels)


def best_f1_dense(values: torch.Tensor, labels: torch.Tensor, block_entries: int = 1 << 19
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """`best_f1_sorted` for dense columns values [rows, n_cols] (every row has an entry)."""
    rows, n_cols = values.shape
    per_block = max(1, block_entries // max(rows, 1))
    f1s, thresholds = [], []
    for start in range(0, n_cols, per_block):
        sorted_values, order = values[:, start:start + per_block].sort(dim=0, descending=True, stable=True)
        k = sorted_values.shape[1]
        col = torch.arange(k).repeat_interleave(rows)
        f1, threshold = best_f1_sorted(col, order.T.flatten(), sorted_values.T.flatten(), k, labels)
        f1s.append(f1)
        thresholds.append(threshold)
    return torch.cat(f1s), torch.cat(thresholds)


@dataclass
class LabelledTokens:
    """Layer activations of every real token of some stories, with the concepts each token carries."""

    activations: torch.Tensor  # [T, d] float32 (CPU)
    labels: torch.Tensor       # [T, C] bool
    token_ids: torch.Tensor    # [T]
    story: torch.Tensor        # [T] story index
    concepts: list[str]


@torch.no_grad()
def labelled_tokens(lm: LanguageModel, layer: str, stories, concepts: list[str], batch_size: int = 32,
                    max_length: int = 256) -> LabelledTokens:
    """Run `stories` (demo corpus Story objects) through the model up to `layer`, labelling tokens.

    A token carries a concept when a labelled span of that concept ends inside its character span (the
    tokenizer's offset mapping): a word split into pieces is labelled at its last piece, where a causal
    model has seen all of it.
    """
    if not getattr(lm.tokenizer, "is_fast", False):
        raise InvalidInputError("Concept evaluation needs a fast tokenizer (with offset mappings).")
    index = {name: i for i, name in enumerate(concepts)}
    special = torch.tensor(sorted(lm.special_token_ids), dtype=torch.long)
    grab = _Grab(layer)
    parts: dict[str, list[torch.Tensor]] = {"activations": [], "labels": [], "token_ids": [], "story": []}
    lm.tokenizer.padding_side = "right"
    with lm.hooks(grab):
        for start in range(0, len(stories), batch_size):
            chunk = stories[start:start + batch_size]
            enc = lm.tokenizer([s.text for s in chunk], return_offsets_mapping=True, padding=True,
                               truncation=True, max_length=max_length, return_tensors="pt")
            ids = enc["input_ids"]
            keep = enc["attention_mask"].bool() & ~torch.isin(ids, special)
            grab.keep, grab.rows = keep.to(lm.device), None
            lm.forward(input_ids=ids.to(lm.device), attention_mask=enc["attention_mask"].to(lm.device))
            story = torch.arange(len(chunk)).unsqueeze(1).expand_as(ids)[keep]
            offsets = enc["offset_mapping"][keep]
            spans = torch.tensor([(i, a, b, index[c]) for i, s in enumerate(chunk) for a, b, c in s.labels
                                  if c in index], dtype=torch.long).view(-1, 4)
            ends_here = ((story.unsqueeze(1) == spans[:, 0]) & (offsets[:, :1] < spans[:, 2])
                         & (spans[:, 2] <= offsets[:, 1:]))
            one_hot = torch.nn.functional.one_hot(spans[:, 3], len(concepts)).float()
            parts["labels"].append((ends_here.float() @ one_hot) > 0)
            parts["activations"].append(grab.rows.float().cpu())
            parts["token_ids"].append(ids[keep])
            parts["story"].append(story + start)
    return LabelledTokens(**{k: torch.cat(v) for k, v in parts.items()}, concepts=concepts)


@torch.no_grad()
def _sparse_codes(sae: nn.Module, x: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, ...]:
    """(row, feature, value) of every non-zero SAE activation of x [T, d]."""
    rows, feats, values = [], [], []
    device = _sae_device(sae)
    for start in range(0, len(x), chunk):
        f = sae.encode(x[start:start + chunk].to(device)).float().cpu()
        r, j = torch.nonzero(f > 0, as_tuple=True)
        rows.append(r + start)
        feats.append(j)
        values.append(f[r, j])
    return torch.cat(rows), torch.cat(feats), torch.cat(values)


def probe_f1(data: LabelledTokens, steps: int = 300, seed: int = 0) -> torch.Tensor:
    """Best F1 per concept of a logistic probe over the whole layer: what one direction can do at best.

    Probes are trained on the tokens of the even-numbered stories and scored (threshold sweep, as for
    features) on the odd-numbered ones, so the reference is never fitted to the tokens it is scored on.
    """
    train = data.story % 2 == 0
    x = data.activations
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    x = (x - mean) / std
    y = data.labels.float()
    torch.manual_seed(seed)
    probe = nn.Linear(x.shape[1], y.shape[1])
    # Balanced loss: rare concepts would otherwise be fitted as "never".
    positives = y[train].mean(0).clamp(1e-4, 1 - 1e-4)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=(1 - positives) / positives)
    optimizer = torch.optim.Adam(probe.parameters(), lr=0.05)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            loss_fn(probe(x[train]), y[train]).backward()
            optimizer.step()
    with torch.no_grad():
        scores = probe(x[~train])
    labels = data.labels[~train]
    f1 = torch.zeros(y.shape[1], dtype=torch.float64)
    for c in range(y.shape[1]):
        f1[c] = best_f1_dense(scores[:, c:c + 1], labels[:, c:c + 1])[0][0, 0]
    return f1


def _scores(predicted: torch.Tensor, truth: torch.Tensor) -> dict:
    tp = int((predicted & truth).sum())
    n_pred, n_true = int(predicted.sum()), int(truth.sum())
    return {"precision": tp / n_pred if n_pred else 0.0, "recall": tp / n_true if n_true else 0.0,
            "f1": 2 * tp / (n_pred + n_true) if n_pred + n_true else 0.0}


def _eval_labels(data: LabelledTokens, column, features: list[int], tokenizer, window: int = 8,
                 top_n: int = 20, n_terms: int = 3) -> dict[int, list[str]]:
    """Suggested labels of `features` from their top contexts in the evaluation tokens themselves."""
    T = len(data.token_ids)
    offsets = torch.arange(-window, window + 1)
    tokens, acts = [], []
    for f in features:
        values = column(f)
        top = values.topk(min(top_n, T))
        around = top.indices.unsqueeze(1) + offsets
        inside = (around >= 0) & (around < T)
        around = around.clamp(0, T - 1)
        same = inside & (data.story[around] == data.story[top.indices].unsqueeze(1)) & (top.values > 0).unsqueeze(1)
        tokens.append(torch.where(same, data.token_ids[around], -1))
        acts.append(torch.where(same, values[around], 0.0))
    tokens, acts = torch.stack(tokens), torch.stack(acts)
    strings = token_strings(tokenizer, torch.unique(tokens[tokens >= 0]).tolist())
    counts = torch.bincount(data.token_ids)
    return dict(zip(features, suggest_labels(tokens, acts, strings, counts, n_terms)))


def evaluate_concepts(lm: LanguageModel, sae: nn.Module, store: Store | None = None, sae_name: str | None = None,
                      n_stories: int = 2000, split: str = "test", seed: int = 0, batch_size: int = 32,
                      max_length: int = 256, recovered_at: float = 0.8) -> dict:
    """Ground truth check on the demo corpus: can one SAE feature detect each planted concept?

    For every concept: the feature with the best token-level F1 (over all thresholds), and the
    best raw neuron of the same layer (each d_model dimension, both signs) as a baseline; whether
    the best feature's suggested label names the concept (a label term is in its lexicon). Labels
    come from the SAE's feature pass when one was computed, else from these stories.
    Saved to saes/<sae_name>/concept_eval.json when a store and name are given.
    """
    from .demo.corpus import CONCEPTS, generate_stories

    if n_stories < 1:
        raise InvalidInputError("n_stories must be at least 1.")
    stories = generate_stories(n_stories, split, seed)
    names = [c.name for c in CONCEPTS]
    data = labelled_tokens(lm, sae.cfg.layer, stories, names, batch_size, max_length)
    rows, feats, values = _sparse_codes(sae, data.activations)
    width = sae.W_dec.shape[0]
    f1, threshold = best_f1_sparse(feats, rows, values, width, data.labels)
    d = data.activations.shape[1]
    n_f1, n_threshold = best_f1_dense(torch.cat([data.activations, -data.activations], dim=1), data.labels)
    p_f1 = probe_f1(data)

    def column(f: int) -> torch.Tensor:
        out = torch.zeros(len(data.token_ids))
        mask = feats == f
        out[rows[mask]] = values[mask]
        return out

    best = f1.argmax(0).tolist()
    labels, label_source = None, "eval"
    if store is not None and sae_name is not None:
        try:
            table = load_features(store, sae_name).stats
            labels = {f: list(table["top_terms"].iloc[f]) for f in set(best)}
            label_source = "features"
        except StoreError:
            pass
    if labels is None:
        labels = _eval_labels(data, column, sorted(set(best)), lm.tokenizer)
    per_concept = []
    for c, concept in enumerate(CONCEPTS):
        f, n = best[c], int(n_f1[:, c].argmax())
        truth = data.labels[:, c]
        feature_scores = _scores(column(f) >= threshold[f, c], truth)  # a NaN threshold predicts nothing
        lexicon = {w.lower() for w in concept.lexicon}
        per_concept.append({
            "concept": concept.name, "kind": concept.kind, "positives": int(truth.sum()),
            "feature": f, "f1": float(f1[f, c]), "threshold": float(threshold[f, c]),
            "precision": feature_scores["precision"], "recall": feature_scores["recall"],
            "label": " / ".join(labels[f]), "label_names_concept": bool(lexicon & set(labels[f])),
            "neuron": n % d, "neuron_sign": 1 if n < d else -1, "neuron_f1": float(n_f1[n, c]),
            "neuron_threshold": float(n_threshold[n, c]), "probe_f1": float(p_f1[c]),
        })
    scores = [p["f1"] for p in per_concept]
    result = {
        "mean_best_f1": sum(scores) / len(scores),
        "recovered": sum(s >= recovered_at for s in scores),
        "concepts": len(scores),
        "recovered_at": recovered_at,
        "neuron_mean_best_f1": sum(p["neuron_f1"] for p in per_concept) / len(per_concept),
        "neuron_recovered": sum(p["neuron_f1"] >= recovered_at for p in per_concept),
        "probe_mean_best_f1": float(p_f1.mean()),
        "labels_name_concept": sum(p["label_names_concept"] for p in per_concept),
        "label_source": label_source,
        "tokens": len(data.token_ids), "stories": n_stories, "split": split, "layer": sae.cfg.layer,
        "per_concept": per_concept,
    }
    if store is not None and sae_name is not None:
        store.write_json(f"saes/{safe_name(sae_name)}/concept_eval.json", result)
    return result
