"""Read MediaWiki XML dumps (plain or bz2, multistream included) as articles, streaming, with `mwxml`.

Only namespace-0 articles are kept; redirects and disambiguation pages are skipped; the wikitext of the
rest is cleaned by `wikitext.clean_code`. Read and parse errors become one-line `IngestError`s.
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

from lvm_core.data.ingest.base import Article, IngestError, one_line, progress_bar
from lvm_core.data.ingest.wikitext import clean_code, is_disambiguation, ns_key

__all__ = ["open_xml", "read_xml_file", "read_xml_stream"]

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
    extra_ns: frozenset[str] | None = None
    try:
        with progress_bar(progress, name) as bar:
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
                        ns_key(name) for key, name in ns_names.items() if key in (-2, 6, 14)
                    )
                code = mwparserfromhell.parse(text, skip_style_tags=True)
                if is_disambiguation(code):
                    continue
                cleaned = clean_code(code, extra_ns)
                if cleaned:
                    yield Article(int(page.id), str(page.title), cleaned)
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
