"""Documents -> passages: short enough to join a spoken prompt, each under its section heading.

Markdown headings ('#' lines, also what HTML headings become) start sections; paragraphs are
merged up to `max_words`, a longer paragraph is split at sentence ends (and a sentence longer than
that at word boundaries). A passage starts with its section's heading ("Opening hours: ..."), so
it still makes sense alone in a prompt. Markdown syntax is removed: the prompt is read, not rendered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

from plexray.knowledge.config import ChunkingConfig

HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclasses.dataclass(frozen=True)
class Chunk:
    chunk_id: str  # '<document key>:<ordinal>', stable while the document's source stays the same
    source: str
    ordinal: int
    section: str
    text: str


def document_key(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def plain_markdown(line: str) -> str:
    """One line of Markdown as plain text: links keep their text, emphasis and code marks go."""
    line = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", line)
    line = re.sub(r"(\*\*|__|\*|_|`)(.+?)\1", r"\2", line)
    return line.replace("`", "").strip()


def document_title(text: str) -> str:
    """A document's first heading, as plain text ('' for a document without one): what `knowledge show`
    calls it."""
    for line in text.splitlines():
        heading = HEADING.match(line.strip())
        if heading:
            return plain_markdown(heading.group(2))
    return ""


def _paragraphs(text: str) -> list[tuple[str, str]]:
    """(section heading, paragraph) in document order; list items and lines of a paragraph are joined
    into sentences."""
    section, lines, result = "", [], []

    def close() -> None:
        if lines:
            result.append((section, " ".join(lines)))
            lines.clear()

    for raw in text.splitlines():
        heading = HEADING.match(raw.strip())
        if heading:
            close()
            section = plain_markdown(heading.group(2))
            continue
        if not raw.strip():
            close()
            continue
        is_item = bool(LIST_ITEM.match(raw))
        line = plain_markdown(LIST_ITEM.sub("", raw))
        if is_item and line and line[-1] not in ".!?:;":
            line += "."  # menu lines read as sentences when joined
        if line:
            lines.append(line)
    close()
    return result


def _pieces(paragraph: str, max_words: int) -> list[list[str]]:
    """A paragraph as word lists of at most max_words, split at sentence ends where possible."""
    pieces: list[list[str]] = []
    for sentence in SENTENCE_END.split(paragraph):
        words = sentence.split()
        while len(words) > max_words:  # a sentence longer than a passage: cut at word boundaries
            pieces.append(words[:max_words])
            words = words[max_words:]
        if words:
            pieces.append(words)
    return pieces


def chunk_text(source: str, text: str, config: ChunkingConfig) -> list[Chunk]:
    key = document_key(source)
    chunks: list[Chunk] = []
    current: list[str] = []
    current_section = ""

    def emit() -> None:
        if current:
            body = " ".join(current)
            text = f"{current_section}: {body}" if current_section else body
            chunks.append(Chunk(f"{key}:{len(chunks)}", source, len(chunks), current_section, text))

    for section, paragraph in _paragraphs(text):
        budget = config.max_words - len(section.split())
        if section != current_section or not current:
            emit()
            current, current_section = [], section
        for piece in _pieces(paragraph, max(budget, 1)):
            if current and len(current) + len(piece) > budget:
                overlap = current[-config.overlap_words:] if config.overlap_words else []
                emit()
                current = overlap[:max(0, budget - len(piece))]
            current.extend(piece)
    emit()
    return chunks
