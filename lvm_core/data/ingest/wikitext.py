"""Render MediaWiki wikitext as plain prose: the cleaning rules of every dump reader.

Only the visible prose survives: references, templates, files, tables, categories, interlanguage links,
headings and trailing link/reference sections are dropped; paragraphs end up separated by one blank line
(`normalize_paragraphs`, also used for the text of tabular sources).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import mwparserfromhell
from mwparserfromhell.nodes import (
    Argument,
    Comment,
    ExternalLink,
    Heading,
    HTMLEntity,
    Tag,
    Template,
    Text,
    Wikilink,
)
from mwparserfromhell.wikicode import Wikicode

__all__ = ["CLEANER_VERSION", "clean_code", "clean_wikitext", "is_disambiguation", "normalize_paragraphs", "ns_key"]

# Version of the text the readers make of a raw page or row (this module's cleaning, `normalize_paragraphs`,
# the readers' filters). Bump it whenever the same raw text could come out differently: a previous dataset
# recorded with another version is never reused (`lvm_core.data.build.known`), and ingest work is keyed by it.
CLEANER_VERSION = 1

# Disambiguation and set-index templates (lower case, spaces): a page carrying one is a list of links.
_DISAMBIG_TEMPLATES = frozenset(
    {
        "disambiguation",
        "disambig",
        "disamb",
        "dab",
        "disambiguation page",
        "hndis",
        "hndisambig",
        "geodis",
        "numberdis",
        "letter-numbercombdisambig",
        "letter-number combination disambiguation",
        "mil-unit-dis",
        "hospitaldis",
        "schooldis",
        "shipindex",
        "ship index",
        "set index article",
        "set index",
        "sia",
        "mountainindex",
        "roadindex",
        "sportindex",
        "surname",
        "given name",
        "пояснителна страница",
        "многозначность",
        "неоднозначность",
        "begriffsklärung",
        "homonymie",
        "desambiguación",
        "disambigua",
    }
)

# Namespaces whose links render nothing in article prose: media, files, categories (common localised
# names included). A dump's own names for these namespaces are added from its <siteinfo>.
_DROP_NAMESPACES = frozenset(
    {
        "file", "image", "media", "category",
        "файл", "изображение", "картинка", "категория", "категорія", "медия", "медиа",
        "datei", "bild", "kategorie",
        "fichier", "catégorie", "média",
        "archivo", "imagen", "categoría",
        "immagine", "categoria",
        "ficheiro", "arquivo", "imagem",
        "plik", "grafika", "kategoria",
        "bestand", "afbeelding", "categorie",
        "fil", "kategori", "tiedosto", "luokka", "soubor",
        "ファイル", "画像", "カテゴリ", "文件", "图像", "分类", "파일", "분류",
        "ملف", "تصنيف", "קובץ", "קטגוריה", "dosya", "resim",
    }
)  # fmt: skip

# Interlanguage link prefixes: language codes such as "de", "zh-min-nan", "simple".
_LANG_PREFIX = re.compile(r"^(?:[a-z]{2,3}(?:-[a-z0-9]{2,8})*|simple)$")

# Tags whose content is not prose.
_DROP_TAGS = frozenset(
    {
        "ref", "references", "gallery", "table", "timeline", "imagemap", "math", "chem", "ce",
        "score", "graph", "templatedata", "inputbox", "categorytree", "section", "hiero",
        "syntaxhighlight", "source", "mapframe", "maplink", "indicator", "noinclude", "style",
        "script",
    }
)  # fmt: skip

# HTML tags that start a new line.
_BLOCK_TAGS = frozenset(
    {"br", "hr", "p", "div", "li", "dt", "dd", "ul", "ol", "dl", "blockquote", "center", "poem", "pre"}
)

# Trailing sections that hold link lists and citations rather than prose.
_DROP_SECTIONS = frozenset(
    {
        "references", "external links", "see also", "further reading", "notes", "footnotes",
        "bibliography", "sources", "citations", "notes and references", "references and notes",
        "works cited", "external link", "other websites",
    }
)  # fmt: skip

_SOFT_BREAK = "\x1f"
_SOFT_BREAKS = re.compile(r"[ \t\n]*\x1f[ \t\n\x1f]*")
_BLANK_LINE_IN = re.compile(r"\n[ \t]*\n")
_MAGIC_WORD = re.compile(r"__[A-Z][A-Z_]*__")
_EMPTY_PARENS = re.compile(r"[(\[]\s*[,;:.\-–—/\s]*[)\]]")
_PAREN_OPEN_PUNCT = re.compile(r"\(\s*[,;:]*\s+|\(\s*[,;:]+\s*")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,;:.!?)\]])")
_SPACES = re.compile(r"[ \t\u00a0\u2009\u200b\u202f]+")
_STRAY_QUOTES = re.compile(r"'{2,}")
_BLANK_LINES = re.compile(r"\n\s*\n")
_HAS_WORD = re.compile(r"\w")


def ns_key(name: str) -> str:
    """A namespace name as links are compared: spaces for underscores, case-folded."""
    return name.replace("_", " ").strip().casefold()


def is_disambiguation(wikitext: str | Wikicode) -> bool:
    """True when the page carries a disambiguation or set-index template."""
    code = mwparserfromhell.parse(wikitext) if isinstance(wikitext, str) else wikitext
    for template in code.filter_templates(recursive=False):
        name = " ".join(str(template.name).replace("_", " ").split()).casefold()
        if name in _DISAMBIG_TEMPLATES or name.endswith(" disambiguation"):
            return True
    return False


def clean_wikitext(wikitext: str, drop_namespaces: Iterable[str] = ()) -> str:
    """Render wikitext as plain prose: paragraphs separated by one blank line, no markup left.

    `drop_namespaces` adds namespace names (e.g. a dump's localised file/category names) whose links are
    removed, on top of the built-in list.
    """
    extra = frozenset(ns_key(n) for n in drop_namespaces)
    return clean_code(mwparserfromhell.parse(wikitext, skip_style_tags=True), extra)


def clean_code(code: Wikicode, extra_ns: frozenset[str] | None) -> str:
    """Prose of parsed wikitext; `extra_ns` (keys as `ns_key` gives them) adds namespaces to drop."""
    out: list[str] = []
    _render(code, out, _DROP_NAMESPACES | extra_ns if extra_ns else _DROP_NAMESPACES, top=True)
    text = _SOFT_BREAKS.sub(_resolve_soft_break, "".join(out))
    return normalize_paragraphs(_MAGIC_WORD.sub("", text), drop_symbol_lines=True)


def _resolve_soft_break(match: re.Match[str]) -> str:
    # Line breaks from HTML block tags never add up to a paragraph break; a blank line written in the
    # source still counts as one.
    return "\n\n" if _BLANK_LINE_IN.search(match.group(0).replace(_SOFT_BREAK, "")) else "\n"


def _render(code: Wikicode, out: list[str], drop_ns: frozenset[str], top: bool = False) -> None:
    """Append the visible prose of `code` to `out` (recursive over nested wikicode)."""
    skip_level = 0  # > 0 while inside a dropped trailing section (top level only)
    for node in code.nodes:
        if isinstance(node, Heading):
            if top:
                title = " ".join(node.title.strip_code().split()).casefold()
                if skip_level and node.level <= skip_level:
                    skip_level = 0
                if not skip_level and title in _DROP_SECTIONS:
                    skip_level = node.level
            out.append("\n\n")  # a heading always ends a paragraph
            continue
        if skip_level:
            continue
        if isinstance(node, Text):
            out.append(node.value)
        elif isinstance(node, Wikilink):
            _render_link(node, out, drop_ns)
        elif isinstance(node, Tag):
            _render_tag(node, out, drop_ns)
        elif isinstance(node, ExternalLink):
            if node.brackets and node.title:
                _render(node.title, out, drop_ns)
        elif isinstance(node, HTMLEntity):
            out.append(node.normalize())
        elif isinstance(node, (Template, Comment, Argument)):
            continue
        # Any other node type carries no prose.


def _render_link(node: Wikilink, out: list[str], drop_ns: frozenset[str]) -> None:
    title = str(node.title).strip()
    colon = title.startswith(":")
    bare = title.lstrip(":").strip()
    if ":" in bare:
        prefix = ns_key(bare.split(":", 1)[0])
        if prefix in drop_ns:
            if colon and node.text is not None:  # [[:Category:X|text]] is an ordinary visible link
                _render(node.text, out, drop_ns)
            return
        if not colon and _LANG_PREFIX.match(prefix) and node.text is None:
            return  # interlanguage link: rendered in the sidebar, not in the prose
    if node.text is not None:
        _render(node.text, out, drop_ns)
    else:
        shown: list[str] = []
        _render(node.title, shown, drop_ns)  # titles may hold entities such as &nbsp;
        out.append("".join(shown).strip().lstrip(":").strip())


def _render_tag(node: Tag, out: list[str], drop_ns: frozenset[str]) -> None:
    name = str(node.tag).strip().lower()
    if name in _DROP_TAGS or node.wiki_markup == "{|":
        return
    block = node.wiki_markup is None and name in _BLOCK_TAGS
    if block:
        out.append(_SOFT_BREAK)  # an HTML block tag stands on its own line; list markup already does
    if node.contents is not None and not node.self_closing:
        _render(node.contents, out, drop_ns)
        if block:
            out.append(_SOFT_BREAK)


def normalize_paragraphs(text: str, drop_symbol_lines: bool = False) -> str:
    """Collapse spaces inside lines and make every paragraph break exactly one blank line.

    With `drop_symbol_lines`, lines without any letter or digit (markup debris) are removed too.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    paragraphs = []
    for block in _BLANK_LINES.split(text):
        lines = []
        for line in block.split("\n"):
            line = _SPACES.sub(" ", line).strip()
            if drop_symbol_lines:
                line = _tidy_line(line)
                if not _HAS_WORD.search(line):
                    continue
            if line:
                lines.append(line)
        if lines:
            paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _tidy_line(line: str) -> str:
    """Remove debris left where templates or references stood: "( ; born 1900)", "word ,"."""
    line = _STRAY_QUOTES.sub("", line)
    line = _EMPTY_PARENS.sub("", line)
    line = _PAREN_OPEN_PUNCT.sub("(", line)
    line = _SPACE_BEFORE_PUNCT.sub(r"\1", line)
    return _SPACES.sub(" ", line).strip()
