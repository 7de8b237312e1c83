"""Text cleaning of `llmops data ingest` (python-faq and file): prose, code, HTML and slugs.

    llmops data ingest python-faq
    llmops data ingest file faq.csv --name team-faq --question q --answer a --license CC-BY-4.0

- Unicode NFKC, control and zero-width characters removed, prose whitespace collapsed;
- code blocks kept with their line breaks and indentation (trailing spaces cut);
- HTML turned into text: a paragraph, a code block, a list or a table each become one block,
  no tags or entities left;
- slugs for row ids and dataset names (ASCII, lowercase, dashes).
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

_BLOCK_TAGS = {"p", "div", "pre", "ul", "ol", "dl", "dt", "dd", "li", "table", "blockquote", "section",
               "figure", "h1", "h2", "h3", "h4", "h5", "h6", "br", "hr"}
_LOOKS_LIKE_HTML = re.compile(r"<(?:p|div|br|span|a|code|pre|ul|ol|li|b|i|em|strong|table|h[1-6])\b[^>]*>"
                              r"|&(?:amp|lt|gt|quot|nbsp|#\d+);", re.IGNORECASE)


def _drop_invisible(text: str) -> str:
    """Remove control (Cc, except newline and tab) and format (Cf: zero-width, BOM, soft hyphen) chars."""
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf"))


def clean_prose(text: str) -> str:
    """NFKC, invisible characters removed, every run of whitespace (newlines too) made one space."""
    text = _drop_invisible(unicodedata.normalize("NFKC", text))
    return " ".join(text.split())


def clean_code(text: str) -> str:
    """NFKC and invisible characters removed; line breaks and indentation kept, trailing spaces cut."""
    text = _drop_invisible(unicodedata.normalize("NFKC", text.replace("\r\n", "\n")))
    lines = [line.rstrip() for line in text.split("\n")]
    return "\n".join(lines).strip("\n")


def clean_multiline(text: str) -> str:
    """For a team's cells: HTML turned into text, paragraphs kept, 3+ blank lines made one."""
    if _LOOKS_LIKE_HTML.search(text):
        return html_fragment_to_text(text)
    text = clean_code(text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _has_block_descendant(el: Any) -> bool:
    return any(isinstance(d.tag, str) and d.tag in _BLOCK_TAGS for d in el.iterdescendants())


def element_blocks(el: Any) -> list[str]:
    """Text blocks of one element: a paragraph, a code block, a list or a table each become one block."""
    tag = el.tag
    if tag in ("script", "style"):
        return []
    if tag == "pre":
        code = clean_code(el.text_content())
        return [code] if code else []
    if tag in ("ul", "ol"):
        items = []
        for number, li in enumerate(el.iterchildren("li"), start=1):
            parts = _children_blocks(li)
            if parts:
                marker = "-" if tag == "ul" else f"{number}."
                items.append(f"{marker} " + "\n".join(parts))
        return ["\n".join(items)] if items else []
    if tag == "table":
        rows = [" | ".join(clean_prose(cell.text_content()) for cell in tr.iterchildren("th", "td"))
                for tr in el.iter("tr")]
        rows = [r for r in rows if r.strip(" |")]
        return ["\n".join(rows)] if rows else []
    return _children_blocks(el)


def _children_blocks(el: Any) -> list[str]:
    """Blocks of an element's content; loose inline text between blocks becomes its own paragraph."""
    if not _has_block_descendant(el):
        text = clean_prose(el.text_content())
        return [text] if text else []
    out: list[str] = []
    inline: list[str] = [el.text or ""]

    def flush() -> None:
        text = clean_prose("".join(inline))
        inline.clear()
        if text:
            out.append(text)

    for child in el:
        if isinstance(child.tag, str):
            if child.tag in _BLOCK_TAGS or _has_block_descendant(child):
                flush()
                out.extend(element_blocks(child))
            else:
                inline.append(child.text_content())
        inline.append(child.tail or "")
    flush()
    return out


def blocks_to_text(blocks: Iterable[str]) -> str:
    return "\n\n".join(b for b in blocks if b)


def html_fragment_to_text(fragment: str) -> str:
    import lxml.html

    root = lxml.html.fragment_fromstring(fragment, create_parent="div")
    text = blocks_to_text(element_blocks(root))
    return html.unescape(text) if "&" in text else text  # double-escaped entities in exported cells


def slugify(text: str, max_length: int = 80) -> str:
    text = text.replace("+", " plus ")  # "C++" must not collide with "C"
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_length].rstrip("-") or "row"
