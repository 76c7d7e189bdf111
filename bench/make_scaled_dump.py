"""Write an N-times larger MediaWiki multistream dump (with its index) from the embedded enwiki sample.

For throughput and memory measurements only: the copies are the sample's 206 pages again with new page
ids and titles, and with the sentences of each prose line shuffled per copy so that chunk texts differ
between copies. The text is real Wikipedia wording but the articles are not real articles; never use
such a dump for quality claims.

Layout as on dumps.wikimedia.org: `<name>.xml.bz2` is concatenated bz2 streams (the first holds the
<mediawiki> tag and <siteinfo>, then `pages_per_stream` pages per stream, the last holds
`</mediawiki>`); `<name>-index.txt.bz2` has one line `offset:page_id:title` per page, offset being the
byte where the page's stream starts. Copy 0 is the sample unchanged.

    python bench/make_scaled_dump.py --factor 16 --out DIR
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import random
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr, unescape

DEFAULT_NAME = "enwiki-20260101-pages-articles-multistream"

_PAGE = re.compile(r"  <page>\n.*?</page>\n", re.DOTALL)
_TITLE = re.compile(r"<title>(.*?)</title>")
_PAGE_ID = re.compile(r"(<ns>[^<]*</ns>\s*<id>)(\d+)(</id>)")
_REDIRECT = re.compile(r'<redirect title="([^"]*)" />')
_TEXT = re.compile(r'<text( bytes="\d+")?( xml:space="preserve")>(.*?)</text>', re.DOTALL)
_SHA1 = re.compile(r"<sha1>[0-9a-z]*</sha1>")
# A sentence end in masked text: . ! or ? (references may follow), spaces, a capital or masked markup.
_SENTENCE_END = re.compile(r"[.!?]\0*(\s+)(?=[A-Z\"'\0])")
_NOT_PROSE = ("{", "|", "!", "=", "<", "[[Category:", "[[File:", "[[Image:", "#", "*", ":", ";")
_XML_ENTITIES = {'"': "&quot;"}
_XML_UNENTITIES = {"&quot;": '"', "&#039;": "'", "&#39;": "'"}


_MARKUP_SPANS = (
    re.compile(r"<!--.*?-->", re.DOTALL),
    re.compile(r"<ref[^>]*/>"),
    re.compile(r"<ref[^>]*>.*?</ref>", re.DOTALL),
)
_NESTED_SPANS = (re.compile(r"\{\{[^{}]*\}\}"), re.compile(r"\[\[[^\[\]]*\]\]"))
_LOOSE_MARKUP = re.compile(r"\{\{|\}\}|\[\[|\]\]|<ref|</ref|<!--|-->")


def _mask_markup(line: str) -> str:
    """The line with templates, links, references and comments blanked out (same length), so that
    sentence ends are looked for in prose only."""
    masked = line
    for pattern in _MARKUP_SPANS:
        masked = pattern.sub(lambda m: "\0" * len(m[0]), masked)
    changed = True
    while changed:  # innermost first: {{a|{{b}}}} and [[File:x|[[y]]]]
        changed = False
        for pattern in _NESTED_SPANS:
            masked, n = pattern.subn(lambda m: "\0" * len(m[0]), masked)
            changed = changed or n > 0
    return masked


def _sentences(line: str) -> list[str] | None:
    """The line cut at sentence ends outside markup; None when markup on it is left open."""
    masked = _mask_markup(line)
    if _LOOSE_MARKUP.search(masked):
        return None
    cuts = [m.span(1) for m in _SENTENCE_END.finditer(masked)]
    pieces, begin = [], 0
    for start, end in cuts:
        pieces.append(line[begin:start])
        begin = end
    pieces.append(line[begin:])
    return pieces


def shuffle_sentences(wikitext: str, rng: random.Random) -> str:
    """Shuffle the sentences within each prose line (markup kept whole; lines with open markup stay)."""
    lines = wikitext.split("\n")
    for i, line in enumerate(lines):
        if not line or line.startswith(_NOT_PROSE):
            continue
        pieces = _sentences(line)
        if pieces is not None and len(pieces) > 1:
            rng.shuffle(pieces)
            lines[i] = " ".join(pieces)
    return "\n".join(lines)


def _copy_title(title: str, copy: int) -> str:
    """`Title` → `Title 3`; a trailing qualifier stays last: `X (disambiguation)` → `X 3 (disambiguation)`."""
    match = re.fullmatch(r"(.*?)( \([^()]*\))?", title, re.DOTALL)
    assert match is not None
    return f"{match[1]} {copy}{match[2] or ''}"


def _mediawiki_sha1(text: str) -> str:
    """Base-36 sha1 as in MediaWiki's <sha1> element."""
    value = int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while value:
        value, r = divmod(value, 36)
        out = digits[r] + out
    return out.rjust(31, "0")


def _copy_page(page: str, copy: int, id_stride: int) -> tuple[str, int, str]:
    """The page XML for copy `copy` (copy 0 unchanged), its page id and its (unescaped) title."""
    title = unescape(_TITLE.search(page)[1], _XML_UNENTITIES)  # type: ignore[index]
    page_id = int(_PAGE_ID.search(page)[2])  # type: ignore[index]
    if copy == 0:
        return page, page_id, title
    new_id = page_id + copy * id_stride
    new_title = _copy_title(title, copy)
    page = _TITLE.sub(lambda m: f"<title>{escape(new_title, _XML_ENTITIES)}</title>", page, count=1)
    page = _PAGE_ID.sub(lambda m: f"{m[1]}{new_id}{m[3]}", page, count=1)
    page = _REDIRECT.sub(
        lambda m: f"<redirect title={quoteattr(_copy_title(unescape(m[1], _XML_UNENTITIES), copy))} />",
        page, count=1,
    )
    match = _TEXT.search(page)
    if match:
        text = unescape(match[3], _XML_UNENTITIES)
        new_text = shuffle_sentences(text, random.Random(f"{copy}:{page_id}"))
        body = escape(new_text, _XML_ENTITIES)
        size = f' bytes="{len(new_text.encode("utf-8"))}"' if match[1] else ""
        page = page[: match.start()] + f"<text{size}{match[2]}>{body}</text>" + page[match.end():]
        page = _SHA1.sub(f"<sha1>{_mediawiki_sha1(new_text)}</sha1>", page, count=1)
    return page, new_id, new_title


def _sample_parts(source: Path | None) -> tuple[str, list[str], str]:
    from lvm_core.data.ingest.sources import sample_dump_path

    path = source or sample_dump_path("en")
    with bz2.open(path, "rt", encoding="utf-8") as fh:
        xml = fh.read()
    pages = _PAGE.findall(xml)
    if not pages:
        raise SystemExit(f"{path}: no <page> found")
    first = xml.index(pages[0])
    last = xml.rindex(pages[-1]) + len(pages[-1])
    return xml[:first], pages, xml[last:]


def make_scaled_dump(
    out_dir: str | Path,
    factor: int,
    *,
    pages_per_stream: int = 100,
    max_pages: int | None = None,
    name: str = DEFAULT_NAME,
    source: Path | None = None,
) -> tuple[Path, Path]:
    """Write `<out_dir>/<name>.xml.bz2` and `<name>-index.txt.bz2`: `factor` copies of the sample's
    pages (the first `max_pages` of them when given); returns (dump, index)."""
    if factor < 1 or pages_per_stream < 1:
        raise ValueError(f"factor={factor}, pages_per_stream={pages_per_stream}: both must be >= 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header, pages, footer = _sample_parts(source)
    pages = pages[:max_pages] if max_pages is not None else pages
    max_id = max(int(_PAGE_ID.search(p)[2]) for p in pages)  # type: ignore[index]
    id_stride = 10 ** len(str(max_id))
    dump = out_dir / f"{name}.xml.bz2"
    index = out_dir / f"{name}-index.txt.bz2"
    tmp_dump, tmp_index = dump.with_suffix(".tmp"), index.with_suffix(".tmp")

    def streams() -> Iterator[list[tuple[str, int, str]]]:
        batch: list[tuple[str, int, str]] = []
        for copy in range(factor):
            for page in pages:
                batch.append(_copy_page(page, copy, id_stride))
                if len(batch) == pages_per_stream:
                    yield batch
                    batch = []
        if batch:
            yield batch

    with open(tmp_dump, "wb") as out, bz2.open(tmp_index, "wt", encoding="utf-8") as idx:
        out.write(bz2.compress(header.encode("utf-8"), 9))
        for batch in streams():
            offset = out.tell()
            out.write(bz2.compress("".join(p for p, _, _ in batch).encode("utf-8"), 9))
            idx.writelines(f"{offset}:{page_id}:{title}\n" for _, page_id, title in batch)
        out.write(bz2.compress(footer.encode("utf-8"), 9))
    tmp_dump.replace(dump)
    tmp_index.replace(index)
    return dump, index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Write an N-times larger MediaWiki multistream dump + index from the embedded enwiki sample "
            "(new ids and titles per copy, sentences shuffled within lines). FOR THROUGHPUT AND MEMORY "
            "BENCHMARKS ONLY: the copies are not real articles, never use them for quality claims."
        )
    )
    parser.add_argument("--factor", type=int, required=True, help="number of copies of the sample's pages")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--pages-per-stream", type=int, default=100)
    parser.add_argument("--name", default=DEFAULT_NAME, help="file name stem (dated, so the snapshot id is stable)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    dump, index = make_scaled_dump(args.out, args.factor, pages_per_stream=args.pages_per_stream, name=args.name)
    print(
        f"{dump} ({dump.stat().st_size / 2**20:.1f} MiB), {index.name}; "
        f"{time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
