"""Whether a dialogue uses what was retrieved: data validation of grounded conversations.

A fact is one sentence of a retrieved passage. An agent turn uses it when it repeats enough of the
fact's content words (words of three or more letters that are not function words, and every
number: prices and times are the facts callers ask for). A paraphrase keeps the nouns and numbers;
a turn that merely shares a word or two with a passage does not count.
"""

from __future__ import annotations

import re
import typing as tp

from plexray.knowledge.chunking import SENTENCE_END
from plexray.knowledge.words import FUNCTION_WORDS

MIN_SHARED_WORDS = 3

WORD = re.compile(r"[a-z]+|\d+(?:[.,:]\d+)*")


def content_words(text: str) -> set[str]:
    words = WORD.findall(text.lower())
    return {w for w in words if w[0].isdigit() or (len(w) >= 3 and w not in FUNCTION_WORDS)}


def fact_sentences(passages: tp.Iterable[str]) -> list[str]:
    """The sentences of the passages that carry enough content to count as a fact."""
    sentences = []
    for passage in passages:
        body = passage.split(": ", 1)[1] if ": " in passage.split(".", 1)[0] else passage  # drop the heading
        for sentence in SENTENCE_END.split(body):
            if len(content_words(sentence)) >= MIN_SHARED_WORDS:
                sentences.append(sentence.strip())
    return sentences


def uses_fact(text: str, facts: tp.Iterable[str]) -> bool:
    """Whether `text` repeats at least MIN_SHARED_WORDS content words of one fact."""
    words = content_words(text)
    return any(len(words & content_words(fact)) >= MIN_SHARED_WORDS for fact in facts)
