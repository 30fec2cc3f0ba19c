"""Built-in demo: a concept-stories corpus with planted ground truth and a small model trained on it."""

from microw_core.demo.corpus import (
    CONCEPTS,
    NEUTRAL_PROMPTS,
    TEMPLATE_COUNT,
    TOPICS,
    Concept,
    Story,
    classify_topic,
    concepts_json,
    export_jsonl,
    generate_stories,
    iter_stories,
    topic_prompt,
    topic_word_counts,
    vocabulary,
)

__all__ = [
    "CONCEPTS", "NEUTRAL_PROMPTS", "TEMPLATE_COUNT", "TOPICS", "Concept", "Story", "classify_topic", "concepts_json",
    "export_jsonl", "generate_stories", "iter_stories", "topic_prompt", "topic_word_counts", "vocabulary",
]
