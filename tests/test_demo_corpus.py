"""The concept-stories corpus: determinism, label correctness, splits and size requirements."""

from __future__ import annotations

import json
import re

import pytest

from microw_core.demo import corpus
from microw_core.demo.corpus import (
    CONCEPTS,
    NEUTRAL_PROMPTS,
    TEMPLATE_COUNT,
    TOPICS,
    classify_topic,
    concepts_json,
    export_jsonl,
    generate_stories,
    iter_stories,
    topic_prompt,
    topic_word_counts,
    vocabulary,
)

WORD = re.compile(r"[A-Za-z]+(?:[-'][A-Za-z]+)*")
BY_NAME = {c.name: c for c in CONCEPTS}


@pytest.fixture(scope="module")
def stories():
    return generate_stories(600, "train", seed=0)


def kinds(kind: str) -> list[str]:
    return [c.name for c in CONCEPTS if c.kind == kind]


def sentence_count(text: str) -> int:
    # sentences end in . ! or ? outside quotes; quoted speech ends with ," or !" / ?" followed by a speech verb
    outside = re.sub(r'"[^"]*"', '"Q"', text)
    return len(re.findall(r"[.?!](?:\s|$)", outside + " "))


def test_same_seed_is_byte_identical():
    a = generate_stories(50, "train", seed=3)
    b = generate_stories(50, "train", seed=3)
    assert a == b
    assert "\n".join(s.text for s in a).encode() == "\n".join(s.text for s in b).encode()
    assert [s.text for s in generate_stories(20, "train", seed=4)] != [s.text for s in a[:20]]


def test_iter_stories_matches_generate():
    it = iter_stories("validation", seed=1)
    assert [next(it) for _ in range(10)] == generate_stories(10, "validation", seed=1)


def test_splits_do_not_overlap():
    texts = {split: {s.text for s in generate_stories(300, split, seed=0)} for split in ("train", "validation", "test")}
    assert not texts["train"] & texts["validation"]
    assert not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]
    # the split is a function of the text alone, so another seed cannot leak test stories into train
    other = {s.text for s in generate_stories(300, "train", seed=1)}
    assert not other & texts["test"]
    assert all(corpus.split_of(t) == "test" for t in texts["test"])


def test_unknown_split_raises():
    with pytest.raises(ValueError, match="split"):
        generate_stories(1, "dev")


def test_size_requirements():
    assert len(TOPICS) >= 16 and len(kinds("topic")) == len(TOPICS)
    assert len(kinds("word_class")) >= 8
    assert len(kinds("structure")) >= 4
    assert len(vocabulary()) >= 1500
    assert TEMPLATE_COUNT >= 60
    names = [c.name for c in CONCEPTS]
    assert len(names) == len(set(names)) and all(n == n.lower() for n in names)


def test_topic_lexicons_are_distinct_and_disjoint_from_word_classes():
    lexicons = {name: set(BY_NAME[name].lexicon) for name in TOPICS}
    class_words = {w for name in kinds("word_class") for w in BY_NAME[name].lexicon}
    for name, words in lexicons.items():
        assert len(words) >= 30, name
        assert not words & class_words, name
        for other, other_words in lexicons.items():
            assert other == name or not words & other_words, (name, other)


def test_story_lengths_and_topics(stories):
    for s in stories:
        assert 3 <= sentence_count(s.text) <= 12, s.text
        assert 1 <= len(s.topics) <= 2 and all(t in TOPICS for t in s.topics)
    mixed = sum(len(s.topics) == 2 for s in stories) / len(stories)
    assert 0.04 <= mixed <= 0.16


def test_labels_are_valid_spans(stories):
    for s in stories:
        for start, end, name in s.labels:
            assert 0 <= start < end <= len(s.text) and name in BY_NAME
            assert s.text[start:end] == s.text[start:end].strip()
        assert list(s.labels) == sorted(s.labels)


def test_labelled_text_belongs_to_its_concept(stories):
    for s in stories:
        for start, end, name in s.labels:
            span, concept = s.text[start:end], BY_NAME[name]
            in_quote = s.text[:start].count('"') % 2 == 1
            if name == "quotation":  # the opening mark only
                assert span == '"' and not in_quote, (s.text, start)
            elif name == "question":
                assert span == "?"
            else:  # one word of the concept's lexicon
                assert WORD.fullmatch(span) and span.lower() in concept.lexicon, (name, span)
            if name.endswith("_tense"):  # narration only
                assert not in_quote, (name, s.text)


def test_every_word_and_mark_of_a_concept_is_labelled(stories):
    """Class, topic and negation words, opening quote marks and question marks never occur unlabelled."""
    concept_of = {w: c.name for c in CONCEPTS if c.kind != "structure" for w in c.lexicon}
    concept_of.update(dict.fromkeys(BY_NAME["negation"].lexicon, "negation"))
    for s in stories:
        labelled = set(s.labels)
        for m in WORD.finditer(s.text):
            name = concept_of.get(m.group().lower())
            if name:
                assert (m.start(), m.end(), name) in labelled, (m.group(), s.text)
        for i in [i for i, c in enumerate(s.text) if c == '"'][::2]:
            assert (i, i + 1, "quotation") in labelled
        for i in [i for i, c in enumerate(s.text) if c == "?"]:
            assert (i, i + 1, "question") in labelled


def test_topic_words_belong_to_the_story_topics(stories):
    for s in stories:
        labelled = {n for _, _, n in s.labels if n in TOPICS}
        assert s.topics[0] in labelled and labelled <= set(s.topics), (s.topics, s.text)


def test_every_structure_and_class_occurs(stories):
    seen = {n for s in stories for _, _, n in s.labels}
    assert seen == {c.name for c in CONCEPTS}


def test_tense_is_consistent_within_a_story(stories):
    for s in stories:
        tenses = {n for _, _, n in s.labels if n.endswith("_tense")}
        assert len(tenses) <= 1


def test_classifier(stories):
    assert classify_topic("") is None
    assert classify_topic("The lighthouse stood near the rocket.") is None  # one hit each: a tie
    correct = sum(classify_topic(s.text) == s.topics[0] for s in stories)
    assert correct / len(stories) >= 0.97
    counts = topic_word_counts("The seagull flew over the Harbour and the lighthouse.")
    assert counts["ocean"] == 3 and set(counts) == set(TOPICS)


def test_topic_prompts_set_their_topic():
    for topic in TOPICS:
        prompt = topic_prompt(topic)
        assert prompt.startswith("One morning Mia") and prompt.endswith(".")
        assert classify_topic(prompt) == topic
    with pytest.raises(ValueError, match="unknown topic"):
        topic_prompt("jungle")
    for prompt in NEUTRAL_PROMPTS:
        assert classify_topic(prompt) is None


def test_generated_words_are_vocabulary(stories):
    vocab = vocabulary()
    words = [w.lower() for s in stories for w in WORD.findall(s.text)]
    assert all(w in vocab for w in words)


def test_exports(tmp_path):
    path = export_jsonl(tmp_path / "demo.jsonl", split="test", limit=5, seed=0)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    stories = generate_stories(5, "test", seed=0)
    assert [r["text"] for r in rows] == [s.text for s in stories]
    assert [tuple(map(tuple, r["labels"])) for r in rows] == [s.labels for s in stories]
    table = concepts_json()
    assert {d["name"] for d in table} == {c.name for c in CONCEPTS}
    assert set(table[0]) == {"name", "kind", "lexicon", "description"}
    json.dumps(table)
