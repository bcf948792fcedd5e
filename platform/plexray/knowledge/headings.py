"""Headings of documents without markup (PDF, plain text), written as Markdown headings for chunking.

Without them a heading runs into the sentence after it ("Allergen information All milk drinks
contain dairy ..."), and the passage has no section to start with. A line is taken for a heading
when it is shaped like one (a few words, not ending as a sentence or a clause does) and

- PDF, styled: it is set larger than the body text (the size most characters have) or in bold
  where the body is not; or, unstyled, it stands where a title stands: after the end of a sentence
  (or first on its page), before a line that starts with a capital, and much shorter than the
  page's lines (a line wrapped mid-sentence runs to the margin);
- plain text: it is a paragraph of one line, after the end of a sentence (or first) and before a
  paragraph that is not such a line too.

A line taken for a heading with no text under it would be lost (chunking keeps a heading only as the
section of the text that follows), so a list of short lines (a menu) must stay text: only a line after
the end of a sentence can be an unstyled heading.
"""

from __future__ import annotations

import collections
import dataclasses
import re

MAX_HEADING_WORDS = 12
NOT_A_HEADING_END = ".,;:!?"  # a line ending so ends a sentence or runs on: body text
SENTENCE_END = ".!?"
LARGER = 1.15  # a heading's size at least this times the body's (rounding of sizes stays below it)
SHORT_LINE = 0.6  # an unstyled heading is at most this fraction of the page's longest line (in characters)


@dataclasses.dataclass(frozen=True)
class StyledLine:
    text: str
    size: float  # the largest font size on the line, in points as it is drawn on the page
    bold: bool  # any of its text in a bold face


def _heading_shaped(text: str) -> bool:
    return (0 < len(text.split()) <= MAX_HEADING_WORDS and any(char.isalpha() for char in text)
            and text[-1] not in NOT_A_HEADING_END)


def _starts_sentence(text: str) -> bool:
    return bool(text) and (text[0].isupper() or text[0].isdigit())


def _body_style(pages: list[list[StyledLine]]) -> tuple[float, bool]:
    """(size, bold) of most characters: the body text."""
    characters: collections.Counter = collections.Counter()
    for line in (line for page in pages for line in page):
        characters[(round(line.size, 1), line.bold)] += len(line.text)
    return characters.most_common(1)[0][0] if characters else (0.0, False)


def pdf_pages_text(pages: list[list[StyledLine]]) -> str:
    """The pages' lines as text, each heading a Markdown '## ' line of its own, pages apart."""
    body_size, body_bold = _body_style(pages)
    texts = []
    for page in pages:
        lines = [line for line in page if line.text]
        longest = max((len(line.text) for line in lines), default=0)
        parts = []
        for index, line in enumerate(lines):
            before = lines[index - 1].text if index else None
            after = lines[index + 1].text if index + 1 < len(lines) else None
            styled = (body_size > 0 and line.size >= body_size * LARGER) or (line.bold and not body_bold)
            titled = (_starts_sentence(line.text) and after is not None and _starts_sentence(after)
                      and (before is None or before[-1] in SENTENCE_END) and len(line.text) <= SHORT_LINE * longest)
            if _heading_shaped(line.text) and (styled or titled):
                parts.append(f"\n## {line.text}\n")
            else:
                parts.append(line.text)
        texts.append("\n".join(parts))
    return "\n\n".join(texts)


def plain_text_with_headings(text: str) -> str:
    """Plain text with each one-line, heading-shaped paragraph between the end of a sentence (or the
    start) and real text written as a Markdown '## ' heading."""
    paragraphs = [paragraph.strip() for paragraph in re.split(r"\n\s*\n", text.strip())]

    def heading_like(paragraph: str) -> bool:
        return "\n" not in paragraph and _heading_shaped(paragraph) and _starts_sentence(paragraph)

    marked = []
    for index, paragraph in enumerate(paragraphs):
        before = paragraphs[index - 1] if index else None
        after = paragraphs[index + 1] if index + 1 < len(paragraphs) else None
        if (heading_like(paragraph) and after is not None and not heading_like(after)
                and (before is None or before[-1] in SENTENCE_END)):
            paragraph = f"## {paragraph}"
        marked.append(paragraph)
    return "\n\n".join(marked)
