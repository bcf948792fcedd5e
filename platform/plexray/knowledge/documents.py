"""Documents to plain text: Markdown as it is, HTML without its markup, PDF through pypdf; the headings
of HTML, PDF and plain text written as Markdown headings (chunking starts a section at each).

A document that cannot be read (missing, not UTF-8, a broken PDF, no text at all) raises
UnreadableDocument with the reason; the indexer skips it and lists it with that reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html.parser
import io
import math
import re
from pathlib import Path

from plexray.knowledge.headings import StyledLine, pdf_pages_text, plain_text_with_headings

TEXT_SUFFIXES = (".md", ".markdown", ".txt", ".text", ".rst")
HTML_SUFFIXES = (".html", ".htm")
PDF_SUFFIXES = (".pdf",)
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + HTML_SUFFIXES + PDF_SUFFIXES
UNSUPPORTED_TYPE = f"unsupported file type; supported: {', '.join(SUPPORTED_SUFFIXES)}"


class UnreadableDocument(Exception):
    """A document that cannot be indexed; the message is the reason listed in the index's manifest."""


@dataclasses.dataclass(frozen=True)
class Document:
    source: str  # the path or URI it was read from: its identity in the index
    kind: str  # markdown, text, html, pdf
    text: str  # plain text; Markdown keeps its '#' headings (chunking uses them)


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def kind_of(source: str) -> str | None:
    suffix = Path(source.split("?", 1)[0]).suffix.lower()
    if suffix in (".md", ".markdown"):
        return "markdown"
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in HTML_SUFFIXES:
        return "html"
    if suffix in PDF_SUFFIXES:
        return "pdf"
    return None


def parse_document(source: str, data: bytes) -> Document:
    """The text of a document's bytes, by its file type; raises UnreadableDocument."""
    kind = kind_of(source)
    if kind is None:
        raise UnreadableDocument(UNSUPPORTED_TYPE)
    if kind == "pdf":
        text = _pdf_text(data)
    else:
        try:
            decoded = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise UnreadableDocument(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        if "\x00" in decoded:
            raise UnreadableDocument("binary data (NUL bytes) in a text file")
        text = {"html": html_text, "text": plain_text_with_headings}.get(kind, str)(decoded)
    if not text.strip():
        raise UnreadableDocument("no text in it")
    return Document(source, kind, text)


class _HTMLText(html.parser.HTMLParser):
    """Visible text of an HTML page: scripts and styles dropped, headings written as Markdown headings
    and block elements as paragraph breaks, so chunking sees the same structure as in Markdown."""

    BLOCKS = {"p", "div", "section", "article", "li", "tr", "br", "table", "ul", "ol", "dl", "dt", "dd",
              "blockquote", "pre", "header", "footer", "main", "nav", "aside"}
    HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
    HIDDEN = {"script", "style", "template", "noscript", "head"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.HIDDEN:
            self.hidden_depth += 1
        elif tag in self.HEADINGS:
            self.parts.append("\n\n" + "#" * self.HEADINGS[tag] + " ")
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag in self.HIDDEN:
            self.hidden_depth = max(0, self.hidden_depth - 1)
        elif tag in self.HEADINGS or tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if not self.hidden_depth:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_text(markup: str) -> str:
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    paragraphs = (line.strip() for line in "".join(parser.parts).split("\n\n"))
    return "\n\n".join(paragraph for paragraph in paragraphs if paragraph)


def _pdf_text(data: bytes) -> str:
    """The PDF's text, its headings (by size, weight and place: see headings.py) as Markdown headings."""
    import pypdf  # only for PDFs

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise UnreadableDocument("encrypted PDF")
        return pdf_pages_text([_styled_lines(page) for page in reader.pages])
    except UnreadableDocument:
        raise
    except Exception as exc:  # noqa: BLE001 - pypdf raises many kinds for a damaged file
        raise UnreadableDocument(f"broken PDF ({type(exc).__name__}: {exc})") from None


BOLD_FACES = ("bold", "black", "heavy")  # in a font's name: 'Helvetica-Bold', 'ABCDEF+Arial-BoldMT'


def _styled_lines(page) -> list[StyledLine]:
    """A PDF page's text lines (as pypdf extracts them) with the size and weight they are set in."""
    pieces: list[tuple[str, float, bool]] = []  # (text, size in points on the page, bold), in page order

    def visit(text, cm, tm, font, size) -> None:
        scale = math.hypot(tm[2], tm[3]) * math.hypot(cm[2], cm[3])  # text and page matrices scale the size
        name = str((font or {}).get("/BaseFont", "")).lower()
        pieces.append((text, (size or 0) * scale, any(face in name for face in BOLD_FACES)))

    page.extract_text(visitor_text=visit)
    lines: list[StyledLine] = []
    text, sizes, bold = "", [0.0], False
    for piece, size, piece_bold in pieces:
        for index, segment in enumerate(piece.split("\n")):
            if index:  # a line ends
                lines.append(StyledLine(text.strip(), max(sizes), bold))
                text, sizes, bold = "", [0.0], False
            text += segment
            if segment.strip():  # line breaks and spaces carry the next run's font: not counted
                sizes.append(size)
                bold = bold or piece_bold
    lines.append(StyledLine(text.strip(), max(sizes), bold))
    return lines
