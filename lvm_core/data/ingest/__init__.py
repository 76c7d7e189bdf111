"""Read Wikipedia articles as clean plain text from MediaWiki XML dumps, Parquet or JSONL.

Every source is streamed (a dump of many GB never sits in memory) and yields `Article`s whose text is
plain prose with paragraphs separated by one blank line, the input the chunker expects. XML dumps are
parsed with `mwxml` and their wikitext is rendered with `mwparserfromhell`: only namespace-0 articles
are kept; redirects and disambiguation pages are skipped; references, templates, files, tables,
categories, interlanguage links, headings and trailing link/reference sections are dropped.

Any bad input (missing file, truncated or corrupt bz2, malformed XML, empty dump, missing columns,
unsupported extension) raises `IngestError` with a one-line message naming the file and the problem.
"""

from __future__ import annotations

import bz2
import contextlib
import importlib.metadata
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import mwparserfromhell
import mwxml
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

from lvm_core.io.storage import file_digest

__all__ = [
    "SAMPLE_FILES",
    "Article",
    "DuplicateIdError",
    "DuplicateReport",
    "IngestError",
    "clean_wikitext",
    "dated_snapshot_id",
    "drop_duplicate_ids",
    "is_disambiguation",
    "is_tabular",
    "read_articles",
    "read_jsonl_articles",
    "read_parquet_articles",
    "read_xml_stream",
    "resolve_source",
    "sample_dump_path",
    "snapshot_id_for",
    "snapshot_id_prefix",
    "source_kind",
]


class IngestError(Exception):
    """A source cannot be read as articles; the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class Article:
    """One article: page id, title and cleaned plain text (paragraphs separated by a blank line)."""

    article_id: int
    title: str
    text: str


# --- embedded sample ---------------------------------------------------------------------------------

# Real Wikipedia export excerpts shipped inside the gensim wheel (located, never imported).
SAMPLE_FILES: dict[str, str] = {
    "en": "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
    "bg": "gensim/test/test_data/bgwiki-latest-pages-articles-shortened.xml.bz2",
    "en-tables": "gensim/test/test_data/enwiki-table-markup.xml.bz2",
}


def sample_dump_path(lang: str = "en") -> Path:
    """Path of an embedded dump excerpt: "en" (106 articles), "bg" (Bulgarian), "en-tables" (tables).

    The files come with the gensim distribution; they are found through its installed-file list, so
    gensim (and its heavy imports) is never loaded.
    """
    if lang not in SAMPLE_FILES:
        raise IngestError(f"sample {lang!r}: unknown sample, expected one of {sorted(SAMPLE_FILES)}")
    wanted = SAMPLE_FILES[lang]
    try:
        dist = importlib.metadata.distribution("gensim")
    except importlib.metadata.PackageNotFoundError:
        raise IngestError(
            f"sample {lang!r}: the gensim distribution that ships the sample dump is not installed "
            "(pip install gensim==4.4.0)"
        ) from None
    for entry in dist.files or ():
        if str(entry).replace("\\", "/") == wanted:
            path = Path(str(entry.locate()))
            if path.is_file():
                return path
            break
    raise IngestError(f"sample {lang!r}: {wanted} not found in the installed gensim distribution")


def resolve_source(source: str | os.PathLike[str]) -> Path:
    """Map "sample" to the embedded dump; otherwise return the existing path (IngestError if missing)."""
    if isinstance(source, str) and source == "sample":
        return sample_dump_path("en")
    path = Path(source).expanduser()
    if not path.exists():
        raise IngestError(f"{path}: no such file")
    if not path.is_file():
        raise IngestError(f"{path}: not a regular file")
    return path


_DATED_NAME = re.compile(r"^(?P<prefix>[A-Za-z0-9_]+)-(?P<date>(?:19|20)\d{6})(?=$|[-_.])")
_PREFIX = re.compile(r"^[A-Za-z0-9_]+")


def dated_snapshot_id(name: str) -> str | None:
    """`<wiki>-<YYYYMMDD>` from a dated dump file name alone (`enwiki-20240601-pages-…`), else None."""
    match = _DATED_NAME.match(name)
    return f"{match['prefix']}-{match['date']}" if match else None


def snapshot_id_prefix(name: str) -> str:
    """The leading `[A-Za-z0-9_]+` of a file name (the wiki of a dump name), or "snapshot" when it has none."""
    match = _PREFIX.match(name)
    return match.group(0) if match else "snapshot"


def snapshot_id_for(path: str | os.PathLike[str]) -> str:
    """Stable snapshot id: `<wiki>-<YYYYMMDD>` from a dated dump name, else `<prefix>-<sha256[:12]>`.

    A "latest" dump name says nothing about its content, so undated files are identified by digest.
    """
    path = Path(path)
    dated = dated_snapshot_id(path.name)
    if dated is not None:
        return dated
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    return f"{snapshot_id_prefix(path.name)}-{file_digest(path)[:12]}"


# --- reading -----------------------------------------------------------------------------------------


def read_articles(
    source: str | os.PathLike[str], limit: int | None = None, progress: bool = False
) -> Iterator[Article]:
    """Stream the articles of `source` ("sample", .xml, .xml.bz2/.bz2, .parquet or .jsonl).

    Errors about the file's content may surface while iterating; a source that yields no article at
    all raises `IngestError` at its end.
    """
    if limit is not None and limit < 0:
        raise IngestError(f"limit={limit}: must be >= 0")
    path = resolve_source(source)
    reader = _reader_for(path)
    count = 0
    if limit == 0:
        return
    for article in reader(path, progress):
        yield article
        count += 1
        if limit is not None and count >= limit:
            return
    if count == 0:
        raise IngestError(f"{path.name}: no article found (empty dump or every page filtered out)")


def source_kind(path: str | os.PathLike[str]) -> str:
    """Which reader a source file needs: "xml" (MediaWiki dump, plain or bz2), "parquet" or "jsonl"."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    last = suffixes[-1] if suffixes else ""
    if last == ".bz2":
        inner = suffixes[-2] if len(suffixes) > 1 else ""
        if inner in (".parquet", ".jsonl", ".json"):
            raise IngestError(f"{path.name}: unsupported compressed {inner} file (decompress it first)")
        return "xml"
    if last == ".xml":
        return "xml"
    if last == ".parquet":
        return "parquet"
    if last == ".jsonl":
        return "jsonl"
    raise IngestError(
        f"{path.name}: unsupported file type {last or '(no extension)'!r}; "
        "expected .xml, .xml.bz2, .parquet or .jsonl"
    )


def _reader_for(path: Path) -> Callable[[Path, bool], Iterator[Article]]:
    kind = source_kind(path)
    if kind == "xml":
        return _read_xml
    if kind == "parquet":
        return lambda p, progress: read_parquet_articles(p, progress=progress)
    return lambda p, progress: read_jsonl_articles(p, progress=progress)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _progress_bar(enabled: bool, desc: str):
    """tqdm bar on stderr, only when asked for and on an interactive terminal outside CI."""
    from tqdm import tqdm

    from lvm_core.runtime.progress import progress_enabled

    return tqdm(desc=desc, unit=" pages", disable=not (enabled and progress_enabled()))


# --- MediaWiki XML -----------------------------------------------------------------------------------


def _open_xml(path: Path) -> IO[bytes]:
    if path.suffix.lower() == ".bz2":
        # bz2.open reads concatenated streams too, so multistream dumps need no special handling.
        return bz2.open(path, "rb")
    return open(path, "rb")


def _iter_pages(fh: IO[bytes]) -> Iterator[tuple[mwxml.Page, dict[int, str]]]:
    """Pages of a dump with its namespace names (number -> name).

    `mwxml.Dump.from_file` requires a <siteinfo> block; excerpts exported without one (the table-markup
    sample) are read page by page with the same mwxml element classes. Each finished page is detached
    from the root element: cleared but attached pages would otherwise add up over millions of pages.
    """
    from mwxml.element_iterator import ElementIterator

    root = ElementIterator.from_file(fh)
    if root.tag != "mediawiki":
        raise mwxml.errors.MalformedXML(f"root element is <{root.tag}>, expected <mediawiki>")
    namespace_names: dict[int, str] = {}
    namespace_map: dict[str, Any] | None = None
    for element in root:
        if element.tag == "siteinfo":
            site_info = mwxml.SiteInfo.from_element(element)
            if site_info.namespaces is not None:
                namespace_map = {ns.name: ns for ns in site_info.namespaces}
                namespace_names = {ns.id: ns.name for ns in site_info.namespaces if ns.name}
        elif element.tag == "page":
            yield mwxml.Page.from_element(element, namespace_map), namespace_names
            element.complete()
            with contextlib.suppress(ValueError):
                root.element.remove(element.element)
        # <logitem> and unknown blocks are not articles; ElementIterator skips their content.


def _read_xml(path: Path, progress: bool) -> Iterator[Article]:
    try:
        fh = _open_xml(path)
    except OSError as exc:
        raise IngestError(f"{path.name}: cannot read file ({_one_line(exc)})") from None
    with fh:
        yield from read_xml_stream(fh, path.name, progress=progress, compressed=path.suffix.lower() == ".bz2")


def read_xml_stream(
    fh: IO[bytes], name: str, *, progress: bool = False, compressed: bool = False
) -> Iterator[Article]:
    """Articles of an open MediaWiki XML byte stream (kept, skipped and cleaned as in `read_articles`).

    `name` names the source in error messages (a file, or a file and the part of it being read);
    `compressed` says the stream decompresses bz2, so that read errors are reported as corrupt bz2.
    """
    extra_ns: frozenset[str] | None = None
    try:
        with _progress_bar(progress, name) as bar:
            for page, ns_names in _iter_pages(fh):
                bar.update(1)
                text = None
                for revision in page:  # history dumps carry several; the last one is current
                    text = revision.text
                if page.namespace != 0 or page.redirect or not text:
                    continue
                if _REDIRECT.match(text) or page.title.rstrip().endswith("(disambiguation)"):
                    continue
                if extra_ns is None:
                    extra_ns = frozenset(
                        _ns_key(name) for key, name in ns_names.items() if key in (-2, 6, 14)
                    )
                code = mwparserfromhell.parse(text, skip_style_tags=True)
                if is_disambiguation(code):
                    continue
                cleaned = _clean_code(code, extra_ns)
                if cleaned:
                    yield Article(int(page.id), str(page.title), cleaned)
    except IngestError:
        raise
    except EOFError as exc:
        raise IngestError(f"{name}: truncated or corrupt bz2 stream ({_one_line(exc)})") from None
    except OSError as exc:
        if compressed:
            raise IngestError(f"{name}: truncated or corrupt bz2 stream ({_one_line(exc)})") from None
        raise IngestError(f"{name}: cannot read file ({_one_line(exc)})") from None
    except (ET.ParseError, mwxml.errors.MalformedXML, UnicodeDecodeError) as exc:
        raise IngestError(f"{name}: malformed MediaWiki XML ({_one_line(exc)})") from None
    except (ValueError, TypeError) as exc:
        # mwxml/mwtypes raise these for pages with missing or ill-typed fields.
        raise IngestError(f"{name}: malformed MediaWiki XML ({_one_line(exc)})") from None


_REDIRECT = re.compile(r"\s*#\s*redirect", re.IGNORECASE)

# --- wikitext cleaning -------------------------------------------------------------------------------

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


def _ns_key(name: str) -> str:
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
    extra = frozenset(_ns_key(n) for n in drop_namespaces)
    return _clean_code(mwparserfromhell.parse(wikitext, skip_style_tags=True), extra)


def _clean_code(code: Wikicode, extra_ns: frozenset[str] | None) -> str:
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
        prefix = _ns_key(bare.split(":", 1)[0])
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


# --- repeated ids ------------------------------------------------------------------------------------


class DuplicateIdError(IngestError):
    """A tabular source holds one id with different texts and no `on_duplicate` policy says which to keep."""


@dataclass
class DuplicateReport:
    """Repeated article ids in a source and what was done with them (goes into the dataset manifest)."""

    policy: str = "first"
    duplicate_ids: int = 0  # ids met more than once
    duplicate_rows_dropped: int = 0  # rows dropped because their id was met before
    conflicting_ids: int = 0  # of duplicate_ids, those whose rows have different texts
    conflicting_examples: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "on_duplicate": self.policy,
            "duplicate_ids": self.duplicate_ids,
            "duplicate_rows_dropped": self.duplicate_rows_dropped,
            "duplicate_ids_conflicting": self.conflicting_ids,
            "conflicting_id_examples": list(self.conflicting_examples),
        }


_DUPLICATE_POLICIES = ("error", "first", "last")


def drop_duplicate_ids(
    articles: Iterable[Article], on_duplicate: str = "error", source_name: str = "source"
) -> tuple[list[Article], DuplicateReport]:
    """One article per id, in first-seen order, and a count of what was dropped.

    Rows repeating an id with the same text are dropped (counted, no error). When the texts differ,
    `on_duplicate` decides: "first" or "last" keeps that row's title and text (at the id's first
    position); "error" raises `DuplicateIdError` naming how many ids conflict and some of them.
    """
    if on_duplicate not in _DUPLICATE_POLICIES:
        raise ValueError(f"on_duplicate={on_duplicate!r}: expected one of {', '.join(_DUPLICATE_POLICIES)}")
    kept: list[Article] = []
    position: dict[int, int] = {}
    repeated: set[int] = set()
    conflicting: dict[int, None] = {}  # ordered set
    dropped = 0
    for article in articles:
        i = position.get(article.article_id)
        if i is None:
            position[article.article_id] = len(kept)
            kept.append(article)
            continue
        dropped += 1
        repeated.add(article.article_id)
        if article.text != kept[i].text:
            conflicting.setdefault(article.article_id)
        if on_duplicate == "last":
            kept[i] = article
    report = DuplicateReport(
        policy=on_duplicate, duplicate_ids=len(repeated), duplicate_rows_dropped=dropped,
        conflicting_ids=len(conflicting), conflicting_examples=list(conflicting)[:10],
    )
    if conflicting and on_duplicate == "error":
        ids = ", ".join(str(a) for a in list(conflicting)[:5]) + (", ..." if len(conflicting) > 5 else "")
        raise DuplicateIdError(
            f"{source_name}: {len(conflicting)} id(s) occur in several rows with different texts "
            f"(e.g. id {ids}); choose which row to keep with --on-duplicate first|last"
        )
    return kept, report


def is_tabular(path: str | os.PathLike[str]) -> bool:
    """Whether a source file is Parquet/JSONL (rows with id,title,text) rather than a MediaWiki dump."""
    return source_kind(path) in ("parquet", "jsonl")


# --- tabular sources ---------------------------------------------------------------------------------

_REQUIRED_COLUMNS = ("id", "title", "text")


def _tabular_article(path: Path, where: str, raw_id: Any, title: Any, text: Any) -> Article | None:
    try:
        article_id = int(raw_id)
    except (TypeError, ValueError):
        raise IngestError(f"{path.name}: {where}: id {raw_id!r} is not an integer") from None
    cleaned = normalize_paragraphs(str(text or ""))
    if not cleaned:
        return None
    return Article(article_id, "" if title is None else str(title), cleaned)


def read_parquet_articles(
    path: Path, row_groups: range | None = None, progress: bool = False
) -> Iterator[Article]:
    """Articles of a Parquet file with id,title,text columns; only `row_groups` when given.

    Row numbers in messages count from the file's first row, whichever row groups are read.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise IngestError(f"{path.name}: not a readable Parquet file ({_one_line(exc)})") from None
    missing = [c for c in _REQUIRED_COLUMNS if c not in parquet.schema_arrow.names]
    if missing:
        raise IngestError(
            f"{path.name}: missing column(s) {', '.join(missing)}; expected id, title, text"
        )
    groups = range(parquet.num_row_groups) if row_groups is None else row_groups
    if groups.start < 0 or groups.stop > parquet.num_row_groups:
        raise IngestError(
            f"{path.name}: row groups {groups.start}-{groups.stop} out of range "
            f"(the file has {parquet.num_row_groups})"
        )
    row = sum(parquet.metadata.row_group(i).num_rows for i in range(groups.start))
    if not len(groups):
        return
    try:
        with _progress_bar(progress, path.name) as bar:
            batches = parquet.iter_batches(
                batch_size=1024, row_groups=list(groups), columns=list(_REQUIRED_COLUMNS)
            )
            for batch in batches:
                ids, titles, texts = (batch.column(i).to_pylist() for i in range(3))
                for raw_id, title, text in zip(ids, titles, texts, strict=True):
                    row += 1
                    article = _tabular_article(path, f"row {row}", raw_id, title, text)
                    if article is not None:
                        yield article
                bar.update(batch.num_rows)
    except (pa.ArrowException, OSError) as exc:
        raise IngestError(f"{path.name}: corrupt Parquet data ({_one_line(exc)})") from None


def read_jsonl_articles(
    path: Path, start: int = 0, stop: int | None = None, first_line: int = 1, progress: bool = False
) -> Iterator[Article]:
    """Articles of a JSONL file (one object with id,title,text per line); lines beginning in [start, stop).

    `start` must be a line start (0 or just after a newline); `first_line` is that line's number, used
    in messages.
    """
    path = Path(path)
    pos = start
    try:
        with open(path, "rb") as fh, _progress_bar(progress, path.name) as bar:
            fh.seek(start)
            for line_no, raw in enumerate(fh, start=first_line):
                if stop is not None and pos >= stop:
                    break
                pos += len(raw)
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise IngestError(f"{path.name}: line {line_no}: invalid JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise IngestError(f"{path.name}: line {line_no}: expected a JSON object")
                missing = [c for c in _REQUIRED_COLUMNS if c not in record]
                if missing:
                    raise IngestError(
                        f"{path.name}: line {line_no}: missing column(s) {', '.join(missing)}; "
                        "expected id, title, text"
                    )
                bar.update(1)
                article = _tabular_article(
                    path, f"line {line_no}", record["id"], record["title"], record["text"]
                )
                if article is not None:
                    yield article
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path.name}: not UTF-8 text ({_one_line(exc)})") from None
    except OSError as exc:
        raise IngestError(f"{path.name}: cannot read file ({_one_line(exc)})") from None
