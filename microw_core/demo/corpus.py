"""Seeded generator of short concept stories with planted, character-level concept labels.

Label design: each label marks the word or mark that expresses a concept, so a causal model can know it at that
token (one model feature could plausibly track each):

* topic (``ocean``, ``forest`` ...): each word of the topic's lexicon (words only that topic uses). Stories stay on
  one topic except ``MIX_RATE`` of them, which visit a second topic for 2-3 sentences and come back.
* word class (``colour``, ``number``, ``animal`` ...): each occurrence of a class word. Class words never occur
  unlabelled: topic lists and templates avoid them.
* structure: ``quotation`` the quote mark that opens direct speech; ``question`` the question mark that ends a
  question; ``negation`` the negating word (not, never, no, nobody, cannot) of a negated sentence or clause;
  ``past_tense`` / ``present_tense`` the narration's verb forms (outside quotes) that carry the story's tense.

Splits are fixed by a hash of the story text, so a text can only ever appear in one split.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from microw_core.demo import lexicon as lx

MIX_RATE = 0.10  # share of stories that switch to a second topic for a few sentences
PRESENT_RATE = 0.25  # share of stories narrated in the present tense
TOPIC_TEMPLATE_RATE = 0.3  # chance a body sentence uses a topic-specific template (they carry the most lexicon)
SPLIT_BUCKETS = {"train": range(0, 18), "validation": range(18, 19), "test": range(19, 20)}  # of 20 hash buckets

_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*", re.I)
_TOKEN = re.compile(r"\{([A-Za-z]+?)(\d?)\}|\[([^|\]]*)\|([^\]]*)\]|<(/?)(neg|ask)>")


@dataclass(frozen=True)
class Concept:
    name: str
    kind: Literal["topic", "word_class", "structure"]
    lexicon: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class Story:
    text: str
    labels: tuple[tuple[int, int, str], ...]  # (start, end, concept) character spans, end exclusive
    topics: tuple[str, ...]  # main topic first


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


# ---- word classes -------------------------------------------------------------------------------------------------
def _pairs_words(pairs) -> tuple[str, ...]:
    return tuple(w for pair in pairs for w in pair if w)


@dataclass(frozen=True)
class _WordClass:
    name: str
    description: str
    words: tuple[str, ...]  # every surface form, as emitted


_NAME_FORMS = tuple(n for n, *_ in lx.NAMES)
WORD_CLASSES: tuple[_WordClass, ...] = (
    _WordClass("colour", "colour words", lx.COLOURS),
    _WordClass("number", "number words from two to fifty (counting)", lx.NUMBERS),
    _WordClass("animal", "animals, singular and plural", _pairs_words(lx.ANIMALS)),
    _WordClass("food", "foods, singular and plural", _pairs_words(lx.FOODS)),
    _WordClass("emotion", "feelings and emotions", lx.EMOTIONS),
    _WordClass("weather", "weather words", lx.WEATHER),
    _WordClass("body_part", "parts of the body", lx.BODY_PARTS),
    _WordClass("family", "family members", lx.FAMILY),
    _WordClass("time", "times of day and days of the week", lx.TIMES),
    _WordClass("character", "character first names", _NAME_FORMS),
)
# template slot -> (word class name, candidate words)
_CLASS_SLOTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "colour": ("colour", lx.COLOURS),
    "number": ("number", lx.NUMBERS),
    "animal": ("animal", tuple(s for s, _ in lx.ANIMALS)),
    "animals": ("animal", tuple(p for _, p in lx.ANIMALS)),
    "food": ("food", tuple(s for s, _ in lx.FOODS)),
    "foods": ("food", tuple(p for _, p in lx.FOODS if p)),
    "emotion": ("emotion", lx.EMOTIONS),
    "weather": ("weather", lx.WEATHER),
    "body": ("body_part", lx.BODY_PARTS),
    "family": ("family", lx.FAMILY),
    "time": ("time", lx.TIMES),
}
NEGATION_WORDS = frozenset({"cannot", "never", "no", "nobody", "not"})
STRUCTURES = ("quotation", "question", "negation", "past_tense", "present_tense")


# ---- rendering ----------------------------------------------------------------------------------------------------
class _First:
    """Stands in for random.Random to render the canonical (first-choice) version of a template."""

    def choice(self, seq: Sequence):
        return seq[0]


@dataclass
class _Cast:
    name: tuple[str, str, str, str]  # (name, subject, possessive, object)
    friend: tuple[str, str, str, str]
    past: bool


@dataclass
class _Sentence:
    parts: list[str] = field(default_factory=list)
    labels: list[tuple[int, int, str]] = field(default_factory=list)
    spans: list[tuple[int, int, str]] = field(default_factory=list)  # negated clauses and questions (markup)
    tense_words: list[tuple[int, int]] = field(default_factory=list)  # narration verb forms
    length: int = 0

    def emit(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    def emit_word(self, word: str) -> tuple[int, int]:
        # a/an agreement: rewrite a preceding stand-alone article before this word
        if word[:1].lower() in "aeiou" and self.parts and re.search(r"(^|[\s\"])[aA] $", self.parts[-1]):
            self.parts[-1] = self.parts[-1][:-1] + "n "
            self.length += 1
        start = self.length
        self.emit(word)
        return start, self.length

    def in_quote(self) -> bool:
        return "".join(self.parts).count('"') % 2 == 1


def _slot_value(slot: str, topic: lx.TopicData, rng, drawn: dict[str, list[str]], number: str) -> str:
    """Draw a topic word for ``slot``; numbered slots (thing2) avoid values already drawn for that slot."""
    pools = {
        "place": topic.places,
        "thing": tuple(s for s, _ in topic.things),
        "things": tuple(p for _, p in topic.things),
        "person": topic.people,
        "adj": topic.adjectives,
        "act": topic.actions,
    }
    key = slot.lower()
    pool = pools[key] if key in pools else _CLASS_SLOTS[key][1]
    used = drawn.setdefault(key, [])
    if number:  # a second draw must differ from the first
        pool = tuple(v for v in pool if v not in used) or pool
    value = rng.choice(pool)
    used.append(value)
    return value


def _render_into(sent: _Sentence, template: str, topic: lx.TopicData, cast: _Cast, rng,
                 drawn: dict[str, list[str]], open_marks: dict[str, int]) -> None:
    pos = 0
    for m in _TOKEN.finditer(template):
        sent.emit(template[pos:m.start()])
        pos = m.end()
        slot, number, present, past, close, mark = m.groups()
        if slot is not None:
            _render_slot(sent, slot, number, topic, cast, rng, drawn, open_marks)
        elif present is not None:
            start, verbs = sent.length, past if cast.past else present
            sent.emit(verbs)
            if not sent.in_quote():
                sent.tense_words += [(start + m.start(), start + m.end()) for m in _WORD.finditer(verbs)
                                     if m.group().lower() not in NEGATION_WORDS]
        elif close:
            start = open_marks.pop(mark)
            sent.spans.append((start, sent.length, "negation" if mark == "neg" else "question"))
        else:
            open_marks[mark] = sent.length
    sent.emit(template[pos:])


def _render_slot(sent: _Sentence, slot: str, number: str, topic: lx.TopicData, cast: _Cast, rng,
                 drawn: dict[str, list[str]], open_marks: dict[str, int]) -> None:
    key = slot.lower()
    pronouns = {"pro": 1, "pos": 2, "obj": 3}
    if key in ("name", "friend"):
        start, end = sent.emit_word(getattr(cast, key)[0])
        sent.labels.append((start, end, "character"))
    elif key in pronouns:
        word = cast.name[pronouns[key]]
        sent.emit_word(word.capitalize() if slot[0].isupper() else word)
    elif key == "act":  # actions are template fragments with their own tense alternations
        _render_into(sent, _slot_value(key, topic, rng, drawn, number), topic, cast, rng, drawn, open_marks)
    else:
        word = _slot_value(key, topic, rng, drawn, number)
        start, end = sent.emit_word(word)
        if key in _CLASS_SLOTS:
            sent.labels.append((start, end, _CLASS_SLOTS[key][0]))


def _capitalise(text: str) -> str:
    """Upper-case the sentence start and the start of quoted speech (same length, so spans stay valid)."""
    chars = list(text)
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == '"' and text[:i].count('"') % 2 == 0]
    for i in starts:
        if i < len(chars):
            chars[i] = chars[i].upper()
    return "".join(chars)


def render_sentence(template: str, topic: lx.TopicData, cast: _Cast, rng) -> tuple[str, list[tuple[int, int, str]]]:
    """Render one template into (sentence, labels relative to the sentence)."""
    sent = _Sentence()
    _render_into(sent, template, topic, cast, rng, {}, {})
    text = _capitalise("".join(sent.parts))
    labels = list(sent.labels)
    lexicon = _TOPIC_LEXICONS[topic.name]
    labels += [(m.start(), m.end(), topic.name) for m in _WORD.finditer(text) if m.group().lower() in lexicon]
    quotes = [i for i, c in enumerate(text) if c == '"']
    labels += [(i, i + 1, "quotation") for i in quotes[::2]]
    for start, end, name in sent.spans:
        if name == "question":
            labels += [(i, i + 1, name) for i in range(start, end) if text[i] == "?"]
        else:
            labels += [(m.start(), m.end(), name) for m in _WORD.finditer(text, start, end)
                       if m.group().lower() in NEGATION_WORDS]
    tense = "past_tense" if cast.past else "present_tense"
    labels += [(start, end, tense) for start, end in sent.tense_words]
    return text, labels


# ---- stories ------------------------------------------------------------------------------------------------------
_TOPIC_BY_NAME = {t.name: t for t in lx.TOPIC_DATA}
TOPICS: tuple[str, ...] = tuple(_TOPIC_BY_NAME)


def _story_plan(rng: random.Random) -> list[tuple[lx.TopicData, str]]:
    """Choose (topic, template) for every sentence of one story."""
    topic = rng.choice(lx.TOPIC_DATA)
    mix = rng.random() < MIX_RATE
    n = rng.randint(7, 12) if mix else rng.randint(3, 12)
    opening = rng.choice(topic.openings if rng.random() < 0.6 else lx.GENERIC_OPENINGS)
    plan = [(topic, opening)] + [(topic, t) for t in _body_templates(rng, topic, n - 2)]
    plan.append((topic, rng.choice(lx.GENERIC_ENDINGS)))
    if mix:
        other = rng.choice([t for t in lx.TOPIC_DATA if t is not topic])
        extra = rng.randint(1, 2)
        k = rng.randint(2, n - 3 - extra)
        visit = [(other, rng.choice(lx.SWITCH_TO))] + [(other, t) for t in _body_templates(rng, other, extra)]
        plan[k:k + extra + 2] = visit + [(topic, rng.choice(lx.SWITCH_BACK))]
    return plan


def _body_templates(rng: random.Random, topic: lx.TopicData, n: int) -> list[str]:
    """n distinct body templates, mixing generic and topic-specific ones."""
    specific = list(topic.templates)
    generic = list(lx.GENERIC_BODY)
    rng.shuffle(specific)
    rng.shuffle(generic)
    return [specific.pop() if specific and rng.random() < TOPIC_TEMPLATE_RATE else generic.pop() for _ in range(n)]


def _make_story(rng: random.Random) -> Story:
    plan = _story_plan(rng)
    main, friend = rng.sample(lx.NAMES, 2)
    cast = _Cast(main, friend, past=rng.random() >= PRESENT_RATE)
    texts, labels, offset = [], [], 0
    for topic, template in plan:
        text, local = render_sentence(template, topic, cast, rng)
        labels.extend((a + offset, b + offset, c) for a, b, c in local)
        texts.append(text)
        offset += len(text) + 1
    topics = tuple(dict.fromkeys(t.name for t, _ in plan))
    return Story(" ".join(texts), tuple(sorted(labels)), topics)


def split_of(text: str) -> str:
    """The split a story text belongs to (a pure function of the text)."""
    bucket = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") % 20
    return next(name for name, buckets in SPLIT_BUCKETS.items() if bucket in buckets)


def iter_stories(split: str = "train", seed: int = 0) -> Iterator[Story]:
    """Endless, deterministic stream of stories of one split."""
    if split not in SPLIT_BUCKETS:
        raise ValueError(f"unknown split {split!r}; use one of {sorted(SPLIT_BUCKETS)}")
    rng = random.Random(f"microw-demo:{seed}:{split}")
    while True:
        story = _make_story(rng)
        if split_of(story.text) == split:
            yield story


def generate_stories(n: int, split: str = "train", seed: int = 0) -> list[Story]:
    return list(itertools.islice(iter_stories(split, seed), n))


# ---- concepts and lexicons ----------------------------------------------------------------------------------------
def _topic_strings(topic: lx.TopicData) -> list[str]:
    return [*topic.places, *(w for pair in topic.things for w in pair), *topic.people, *topic.adjectives,
            *topic.actions, *topic.openings, *topic.templates]


def _template_words(strings) -> set[str]:
    """Literal words of templates: slots and markup removed, both sides of tense alternations kept."""
    out: set[str] = set()
    for s in strings:
        s = re.sub(r"\{\w+\}|</?\w+>", " ", s)
        out.update(_words(s.replace("[", " ").replace("|", " ").replace("]", " ")))
    return out


def _generic_strings() -> tuple[str, ...]:
    return (*lx.GENERIC_OPENINGS, *lx.GENERIC_BODY, *lx.GENERIC_ENDINGS, *lx.SWITCH_TO, *lx.SWITCH_BACK)


def _topic_lexicons() -> dict[str, tuple[str, ...]]:
    """Each topic's words that occur in no other topic, no generic template and no word class."""
    words = {t.name: _template_words(_topic_strings(t)) for t in lx.TOPIC_DATA}
    shared = _template_words(_generic_strings()) | {w.lower() for c in WORD_CLASSES for w in c.words}
    out = {}
    for name, ws in words.items():
        others = set().union(*(v for k, v in words.items() if k != name))
        out[name] = tuple(sorted(ws - others - shared))
    return out


def _tense_words() -> tuple[set[str], set[str]]:
    present, past = set(), set()
    for s in (*_generic_strings(), *(x for t in lx.TOPIC_DATA for x in _topic_strings(t))):
        for a, b in re.findall(r"\[([^|\]]*)\|([^\]]*)\]", s):
            present.update(_words(a))
            past.update(_words(b))
    return present, past


_TOPIC_LEXICONS: dict[str, frozenset[str]] = {name: frozenset(ws) for name, ws in _topic_lexicons().items()}


def _build_concepts() -> tuple[Concept, ...]:
    concepts = [Concept(t.name, "topic", tuple(sorted(_TOPIC_LEXICONS[t.name])), t.description)
                for t in lx.TOPIC_DATA]
    concepts += [Concept(c.name, "word_class", tuple(sorted({w.lower() for w in c.words})), c.description)
                 for c in WORD_CLASSES]
    present, past = _tense_words()
    concepts += [
        Concept("quotation", "structure", ('"',), "the quote mark that opens direct speech"),
        Concept("question", "structure", ("?",), "the question mark that ends a question"),
        Concept("negation", "structure", tuple(sorted(NEGATION_WORDS)),
                "the negating word of a negated sentence or clause"),
        Concept("past_tense", "structure", tuple(sorted(past - NEGATION_WORDS)),
                "narration verb forms (outside quotes) in the past tense"),
        Concept("present_tense", "structure", tuple(sorted(present - NEGATION_WORDS)),
                "narration verb forms (outside quotes) in the present tense"),
    ]
    return tuple(concepts)


CONCEPTS: tuple[Concept, ...] = _build_concepts()
CONCEPT_BY_NAME: dict[str, Concept] = {c.name: c for c in CONCEPTS}
_TOPIC_OF_WORD: dict[str, str] = {w: c.name for c in CONCEPTS if c.kind == "topic" for w in c.lexicon}
NEUTRAL_PROMPTS: tuple[str, ...] = lx.NEUTRAL_PROMPTS
TEMPLATE_COUNT: int = len(_generic_strings()) + sum(len(t.openings) + len(t.templates) for t in lx.TOPIC_DATA)


def topic_word_counts(text: str) -> dict[str, int]:
    """Lexicon hits per topic (word level, case-insensitive); every topic is present, zero included."""
    counts = dict.fromkeys(TOPICS, 0)
    for w in _words(text):
        topic = _TOPIC_OF_WORD.get(w)
        if topic:
            counts[topic] += 1
    return counts


def classify_topic(text: str) -> str | None:
    """The topic with strictly the most lexicon hits; None on a tie or no hits."""
    ranked = sorted(topic_word_counts(text).items(), key=lambda kv: -kv[1])
    if ranked[0][1] == 0 or ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]


def vocabulary() -> frozenset[str]:
    """Every word (lowercase) the generator can emit."""
    words = _template_words(_generic_strings())
    for t in lx.TOPIC_DATA:
        words |= _template_words(_topic_strings(t))
    for c in WORD_CLASSES:
        words.update(w.lower() for w in c.words)
    words.update(w for _, *pronouns in lx.NAMES for w in pronouns)
    return frozenset(words)


def topic_prompt(topic: str) -> str:
    """A one-sentence story start that sets the topic, e.g. "One morning Mia walked down to the beach."."""
    if topic not in _TOPIC_BY_NAME:
        raise ValueError(f"unknown topic {topic!r}; use one of {', '.join(TOPICS)}")
    data = _TOPIC_BY_NAME[topic]
    cast = _Cast(lx.NAMES[0], lx.NAMES[-1], past=True)
    return render_sentence(data.openings[0], data, cast, _First())[0]


# ---- exports for the CLI ------------------------------------------------------------------------------------------
def concepts_json() -> list[dict]:
    return [{"name": c.name, "kind": c.kind, "lexicon": list(c.lexicon), "description": c.description}
            for c in CONCEPTS]


def export_jsonl(path: str | Path, split: str = "test", limit: int = 100, seed: int = 0) -> Path:
    """Write ``limit`` stories as JSON lines {"text", "labels": [[start, end, concept], ...]}."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for story in generate_stories(limit, split, seed):
            f.write(json.dumps({"text": story.text, "labels": [list(x) for x in story.labels]}) + "\n")
    return path
