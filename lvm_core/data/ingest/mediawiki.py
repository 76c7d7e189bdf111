"""Read MediaWiki XML dumps (plain or bz2, multistream included) as articles, streaming, with `mwxml`.

Only namespace-0 articles are kept; redirects and disambiguation pages are skipped; the wikitext of the
rest is cleaned by `wikitext.clean_code`, unless the previous dataset holds the same raw text cleaned
(`read_xml_pages`). Read and parse errors become one-line `IngestError`s.
"""

from __future__ import annotations

import bz2
import contextlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import mwparserfromhell
import mwxml

from lvm_core.data.ingest.base import (
    Article,
    IngestError,
    KnownPage,
    KnownRow,
    one_line,
    progress_bar,
    source_sha1,
)
from lvm_core.data.ingest.wikitext import clean_code, is_disambiguation, ns_key

__all__ = ["open_xml", "read_xml_file", "read_xml_pages", "read_xml_stream"]

_REDIRECT = re.compile(r"\s*#\s*redirect", re.IGNORECASE)


def open_xml(path: Path) -> IO[bytes]:
    """A dump file opened for bytes, decompressing `.bz2`."""
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


def read_xml_file(path: Path, progress: bool) -> Iterator[Article]:
    """Articles of a dump file; a file that cannot be opened is an `IngestError`."""
    try:
        fh = open_xml(path)
    except OSError as exc:
        raise IngestError(f"{path.name}: cannot read file ({one_line(exc)})") from None
    with fh:
        yield from read_xml_stream(fh, path.name, progress=progress, compressed=path.suffix.lower() == ".bz2")


def read_xml_stream(
    fh: IO[bytes], name: str, *, progress: bool = False, compressed: bool = False
) -> Iterator[Article]:
    """Articles of an open MediaWiki XML byte stream (kept, skipped and cleaned as in `read_articles`).

    `name` names the source in error messages (a file, or a file and the part of it being read);
    `compressed` says the stream decompresses bz2, so that read errors are reported as corrupt bz2.
    """
    for item in read_xml_pages(fh, name, progress=progress, compressed=compressed):
        assert isinstance(item, Article)  # no `known`: every page is cleaned
        yield item


def read_xml_pages(
    fh: IO[bytes], name: str, *, progress: bool = False, compressed: bool = False, known: KnownRow | None = None
) -> Iterator[Article | KnownPage]:
    """As `read_xml_stream`, but a kept page that `known(id, source_sha1)` finds in the previous dataset
    comes as a `KnownPage` (its row there) and is not parsed by mwparserfromhell at all.

    The filters that need no parse (namespace, redirect, disambiguation title) run first, so a known page
    is one that the same cleaner kept last time from the same raw text: it would be kept and cleaned
    the same way again (a page filtered out then is not in the previous dataset and is cleaned as usual).
    """
    try:
        with progress_bar(progress, name) as bar:
            cleaner = _PageCleaner(known)
            for page, ns_names in _iter_pages(fh):
                bar.update(1)
                item = cleaner.page(page, ns_names)
                if item is not None:
                    yield item
    except IngestError:
        raise
    except EOFError as exc:
        raise IngestError(f"{name}: truncated or corrupt bz2 stream ({one_line(exc)})") from None
    except OSError as exc:
        if compressed:
            raise IngestError(f"{name}: truncated or corrupt bz2 stream ({one_line(exc)})") from None
        raise IngestError(f"{name}: cannot read file ({one_line(exc)})") from None
    except (ET.ParseError, mwxml.errors.MalformedXML, UnicodeDecodeError) as exc:
        raise IngestError(f"{name}: malformed MediaWiki XML ({one_line(exc)})") from None
    except (ValueError, TypeError) as exc:
        # mwxml/mwtypes raise these for pages with missing or ill-typed fields.
        raise IngestError(f"{name}: malformed MediaWiki XML ({one_line(exc)})") from None


class _PageCleaner:
    """One page at a time: filtered, looked up among the known pages, else parsed and cleaned."""

    def __init__(self, known: KnownRow | None) -> None:
        self.known = known
        self.extra_ns: frozenset[str] | None = None

    def page(self, page: mwxml.Page, ns_names: dict[int, str]) -> Article | KnownPage | None:
        text = None
        for revision in page:  # history dumps carry several; the last one is current
            text = revision.text
        if page.namespace != 0 or page.redirect or not text:
            return None
        if _REDIRECT.match(text) or page.title.rstrip().endswith("(disambiguation)"):
            return None
        digest = source_sha1(text)
        if self.known is not None:
            row = self.known(int(page.id), digest)
            if row is not None:
                return KnownPage(int(page.id), str(page.title), digest, row)
        if self.extra_ns is None:
            self.extra_ns = frozenset(ns_key(name) for key, name in ns_names.items() if key in (-2, 6, 14))
        code = mwparserfromhell.parse(text, skip_style_tags=True)
        if is_disambiguation(code):
            return None
        cleaned = clean_code(code, self.extra_ns)
        return Article(int(page.id), str(page.title), cleaned, digest) if cleaned else None
