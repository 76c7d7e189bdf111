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
import json
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
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


_UNMARKED = ("{|", "=")
_LIST_MARKERS = re.compile(r"^[*#:;]*\s*")
# A line starting so may render to nothing: a mark at its start would make a chunk of its own.
_NOT_RENDERED = ("{", "<", "}", "|", "!", "__", "[[File:", "[[Image:", "[[Category:")
MARK_EVERY = 6  # words: a chunk has at least 40, so every chunk of a marked copy holds the mark


def mark_lines(wikitext: str, word: str) -> str:
    """`word` put at the start of every text line and after every `MARK_EVERY` words on it (tables and
    headings left alone), so that no chunk of a copy equals a chunk of the original."""
    lines = wikitext.split("\n")
    for i, line in enumerate(lines):
        if not line.strip() or line.startswith(_UNMARKED):
            continue
        head = _LIST_MARKERS.match(line)[0]  # type: ignore[index]
        words = line[len(head):].split(" ")
        marked = [w for j in range(0, len(words), MARK_EVERY) for w in (word, *words[j:j + MARK_EVERY])]
        lines[i] = head + " ".join(marked[1:] if words[0].startswith(_NOT_RENDERED) else marked)
    return "\n".join(lines)


def _copy_title(title: str, copy: int | str) -> str:
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


def _copy_page(page: str, copy: int, id_stride: int, distinct: bool = False) -> tuple[str, int, str]:
    """The page XML for copy `copy` (copy 0 unchanged), its page id and its (unescaped) title."""
    title = _page_title(page)
    page_id = _page_id(page)
    if copy == 0:
        return page, page_id, title
    mark = f"copy{copy}" if distinct else None
    return _renamed_page(page, page_id + copy * id_stride, str(copy), f"{copy}:{page_id}", mark)


def _page_title(page: str) -> str:
    return unescape(_TITLE.search(page)[1], _XML_UNENTITIES)  # type: ignore[index]


def _page_id(page: str) -> int:
    return int(_PAGE_ID.search(page)[2])  # type: ignore[index]


def _renamed_page(page: str, new_id: int, tag: str, rng_key: str, mark: str | None = None) -> tuple[str, int, str]:
    """The page under a new id and title (`Title <tag>`), its prose sentences shuffled by `rng_key` and,
    with `mark`, that word put on every line and after every sentence (`mark_lines`)."""
    new_title = _copy_title(_page_title(page), tag)
    page = _TITLE.sub(lambda m: f"<title>{escape(new_title, _XML_ENTITIES)}</title>", page, count=1)
    page = _PAGE_ID.sub(lambda m: f"{m[1]}{new_id}{m[3]}", page, count=1)
    page = _REDIRECT.sub(
        lambda m: f"<redirect title={quoteattr(_copy_title(unescape(m[1], _XML_UNENTITIES), tag))} />",
        page, count=1,
    )
    page = _with_text(page, lambda text: shuffle_sentences(text, random.Random(rng_key)))
    if mark is not None:
        page = _with_text(page, lambda text: mark_lines(text, mark))
    return page, new_id, new_title


def _with_text(page: str, change: Callable[[str], str]) -> str:
    """The page with its wikitext replaced by `change(text)` (size and sha1 updated); unchanged if no text."""
    match = _TEXT.search(page)
    if not match:
        return page
    new_text = change(unescape(match[3], _XML_UNENTITIES))
    body = escape(new_text, _XML_ENTITIES)
    size = f' bytes="{len(new_text.encode("utf-8"))}"' if match[1] else ""
    page = page[: match.start()] + f"<text{size}{match[2]}>{body}</text>" + page[match.end():]
    return _SHA1.sub(f"<sha1>{_mediawiki_sha1(new_text)}</sha1>", page, count=1)


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
    distinct: bool = False,
) -> tuple[Path, Path]:
    """Write `<out_dir>/<name>.xml.bz2` and `<name>-index.txt.bz2`: `factor` copies of the sample's
    pages (the first `max_pages` of them when given); returns (dump, index). Copies share many chunk
    texts with the original (single-sentence lines, lists); `distinct` marks every line and sentence of
    a copy with a word of its own, so that no chunk repeats (else the leakage gates of a build fail)."""
    if factor < 1 or pages_per_stream < 1:
        raise ValueError(f"factor={factor}, pages_per_stream={pages_per_stream}: both must be >= 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header, pages, footer = _sample_parts(source)
    pages = pages[:max_pages] if max_pages is not None else pages
    max_id = max(int(_PAGE_ID.search(p)[2]) for p in pages)  # type: ignore[index]
    id_stride = 10 ** len(str(max_id))

    def copies() -> Iterator[tuple[str, int, str]]:
        for copy in range(factor):
            for page in pages:
                yield _copy_page(page, copy, id_stride, distinct)

    return _write_multistream(out_dir, name, header, copies(), footer, pages_per_stream)


def _write_multistream(
    out_dir: Path,
    name: str,
    header: str,
    pages: Iterable[tuple[str, int, str]],
    footer: str | Callable[[], str],
    pages_per_stream: int,
) -> tuple[Path, Path]:
    """Write `<name>.xml.bz2` (header stream, `pages_per_stream` pages per stream, footer stream) and its
    `<name>-index.txt.bz2`; each file appears only once complete. `footer` may be a callable, asked once
    all pages are written."""
    dump = out_dir / f"{name}.xml.bz2"
    index = out_dir / f"{name}-index.txt.bz2"
    tmp_dump, tmp_index = dump.with_suffix(".tmp"), index.with_suffix(".tmp")

    def streams() -> Iterator[list[tuple[str, int, str]]]:
        batch: list[tuple[str, int, str]] = []
        for item in pages:
            batch.append(item)
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
        out.write(bz2.compress((footer() if callable(footer) else footer).encode("utf-8"), 9))
    tmp_dump.replace(dump)
    tmp_index.replace(index)
    return dump, index


# --- consecutive snapshots --------------------------------------------------------------------------

_DATE_IN_NAME = re.compile(r"(?<=-)(\d{4})(\d{2})(\d{2})(?=-|\.|$)")
_NS = re.compile(r"<ns>(\d+)</ns>")


def next_month_name(name: str, date: str | None = None) -> str:
    """`enwiki-20260101-pages-…` → `enwiki-20260201-pages-…` (or the given YYYYMMDD date)."""
    match = _DATE_IN_NAME.search(name)
    if match is None:
        raise ValueError(f"{name!r}: no -YYYYMMDD- date in the dump name, so no snapshot id to follow")
    if date is None:
        year, month = int(match[1]), int(match[2]) + 1
        year, month = (year + 1, 1) if month > 12 else (year, month)
        date = f"{year:04d}{month:02d}{match[3]}"
    if not re.fullmatch(r"\d{8}", date):
        raise ValueError(f"date {date!r}: expected YYYYMMDD")
    return name[: match.start()] + date + name[match.end():]


def _dump_parts(path: Path) -> Iterator[tuple[str, str]]:
    """("header", xml), then ("page", xml) per page, then ("footer", xml), reading line by line."""
    part: list[str] = []
    in_page = seen_page = False
    with bz2.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line == "  <page>\n":
                if not seen_page:
                    yield "header", "".join(part)
                    seen_page = True
                part, in_page = [], True
            part.append(line)
            if in_page and line == "  </page>\n":
                yield "page", "".join(part)
                part, in_page = [], False
    yield "footer", "".join(part)


def _draw(seed: int, what: str, page_id: int) -> float:
    """A seeded uniform number in [0, 1) per (what, page id), so choices do not depend on page order."""
    digest = hashlib.sha256(f"{seed}:{what}:{page_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _edit_text(text: str, sentence: str) -> str:
    """One revision: `sentence` appended to the longest prose line (a new last paragraph if none)."""
    lines = text.split("\n")
    prose = [i for i, line in enumerate(lines) if len(line) > 40 and not line.startswith(_NOT_PROSE)]
    if not prose:
        return f"{text}\n\n{sentence}"
    i = max(prose, key=lambda j: len(lines[j]))
    lines[i] = f"{lines[i]} {sentence}"
    return "\n".join(lines)


def make_next_snapshot(
    previous: str | Path,
    out_dir: str | Path,
    *,
    edit: float = 0.05,
    add: float = 0.02,
    remove: float = 0.01,
    seed: int = 0,
    date: str | None = None,
    pages_per_stream: int = 100,
) -> tuple[Path, Path, dict[str, object]]:
    """The next month of a multistream dump: of its content pages (namespace 0, not redirects), about
    `remove` left out, `edit` revised (one sentence added) and `add` copied in as new articles (new ids
    above the largest, new titles, sentences shuffled and marked by `mark_lines`), chosen by seeded hashes of the page ids. The
    dump's date moves on a month (or to `date`), so snapshot ids follow: enwiki-20260101 → enwiki-20260201.
    Writes `<name>-changes.json` (the edited, added and removed page ids = article ids) beside the dump.
    Returns (dump, index, changes)."""
    previous, out_dir = Path(previous), Path(out_dir)
    for name, value in (("edit", edit), ("add", add), ("remove", remove)):
        if not 0 <= value <= 1:
            raise ValueError(f"--{name} {value}: a fraction in [0, 1]")
    name = next_month_name(previous.name.removesuffix(".bz2").removesuffix(".xml"), date)
    snapshot = name.split("-pages")[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    changes: dict[str, list[int]] = {"edited": [], "added": [], "removed": []}
    sources: list[str] = []
    parts = _dump_parts(previous)
    header = next(parts)[1]
    footer = ""
    max_id = 0

    def kept_pages() -> Iterator[tuple[str, int, str]]:
        nonlocal footer, max_id
        for kind, xml in parts:
            if kind == "footer":
                footer = xml
                break
            page_id = _page_id(xml)
            max_id = max(max_id, page_id)
            ns = _NS.search(xml)
            if (ns is not None and ns[1] != "0") or _REDIRECT.search(xml):
                yield xml, page_id, _page_title(xml)
                continue
            u = _draw(seed, name, page_id)
            if _draw(seed, f"add:{name}", page_id) < add:
                sources.append(xml)
            if u < remove:
                changes["removed"].append(page_id)
                continue
            if u < remove + edit:
                changes["edited"].append(page_id)
                line = f"This sentence was added to article {page_id} in {snapshot}."
                xml = _with_text(xml, lambda t, line=line: _edit_text(t, line))
            yield xml, page_id, _page_title(xml)
        for i, xml in enumerate(sources):
            new_id = max_id + 1 + i
            new = _renamed_page(xml, new_id, f"new {i}", f"add:{seed}:{name}:{_page_id(xml)}", f"new{new_id}")
            changes["added"].append(new[1])
            yield new

    dump, index = _write_multistream(out_dir, name, header, kept_pages(), lambda: footer, pages_per_stream)
    record = {
        "previous": previous.name, "dump": dump.name, "seed": seed,
        "fractions": {"edit": edit, "add": add, "remove": remove}, **changes,
    }
    (out_dir / f"{name}-changes.json").write_text(json.dumps(record, indent=1) + "\n")
    return dump, index, record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Write an N-times larger MediaWiki multistream dump + index from the embedded enwiki sample "
            "(new ids and titles per copy, sentences shuffled within lines), or, with --next-of, the next "
            "month of such a dump (seeded edits, additions and removals; dated one month later). FOR "
            "THROUGHPUT, MEMORY AND INCREMENTAL-BUILD BENCHMARKS ONLY: the copies are not real articles, "
            "never use them for quality claims."
        )
    )
    parser.add_argument("--factor", type=int, help="number of copies of the sample's pages")
    parser.add_argument("--next-of", type=Path, metavar="DUMP", help="write the month after this dump instead")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--pages-per-stream", type=int, default=100)
    parser.add_argument("--name", default=DEFAULT_NAME, help="file name stem (dated, so the snapshot id is stable)")
    parser.add_argument("--distinct", action="store_true",
                        help="mark every line of a copy, and every 6 words, with a word of its own: no chunk repeats")
    parser.add_argument("--edit", type=float, default=0.05, help="--next-of: fraction of articles revised")
    parser.add_argument("--add", type=float, default=0.02, help="--next-of: fraction of articles added (copies)")
    parser.add_argument("--remove", type=float, default=0.01, help="--next-of: fraction of articles removed")
    parser.add_argument("--seed", type=int, default=0, help="--next-of: seed of the choices")
    parser.add_argument("--date", help="--next-of: YYYYMMDD of the new dump (default: one month later)")
    args = parser.parse_args(argv)
    if (args.factor is None) == (args.next_of is None):
        parser.error("give either --factor N or --next-of DUMP")
    started = time.perf_counter()
    if args.next_of is not None:
        dump, index, changes = make_next_snapshot(
            args.next_of, args.out, edit=args.edit, add=args.add, remove=args.remove, seed=args.seed,
            date=args.date, pages_per_stream=args.pages_per_stream,
        )
        counts = ", ".join(f"{len(changes[k])} {k}" for k in ("edited", "added", "removed"))  # type: ignore[arg-type]
        print(f"changes: {counts} (page ids in {dump.name.split('.')[0]}-changes.json)")
    else:
        dump, index = make_scaled_dump(
            args.out, args.factor, pages_per_stream=args.pages_per_stream, name=args.name, distinct=args.distinct
        )
    print(
        f"{dump} ({dump.stat().st_size / 2**20:.1f} MiB), {index.name}; "
        f"{time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
