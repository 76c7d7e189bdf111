"""Ingestion from the real embedded dump excerpts, tabular files and broken inputs."""

from __future__ import annotations

import bz2
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lvm_core.data.ingest.base import Article, IngestError
from lvm_core.data.ingest.sources import read_articles, resolve_source, sample_dump_path, snapshot_id_for
from lvm_core.data.ingest.wikitext import clean_wikitext, is_disambiguation
from tests.fixtures.messages import assert_one_line_error
from tests.fixtures.paths import TEST_DATA

DATA = TEST_DATA
TINY = DATA / "tiny_dump.xml"
MARKUP_LEFTOVERS = ("{{", "}}", "[[", "]]", "<ref", "</", "{|", "|}", "Category:", "File:", "__TOC__")


def _raw_pages(path: Path) -> list[dict]:
    """Title, namespace, id and redirect flag of every <page>, read with ElementTree (not mwxml)."""
    pages = []
    with bz2.open(path, "rb") as fh:
        for _, elem in ET.iterparse(fh):
            if elem.tag.rsplit("}", 1)[-1] != "page":
                continue
            fields = {child.tag.rsplit("}", 1)[-1]: child for child in elem}
            pages.append(
                {
                    "title": fields["title"].text,
                    "ns": int(fields["ns"].text),
                    "id": int(fields["id"].text),
                    "redirect": "redirect" in fields,
                }
            )
            elem.clear()
    return pages


@pytest.fixture(scope="module")
def sample_articles() -> list[Article]:
    return list(read_articles("sample"))


# --- the embedded sample ---------------------------------------------------------------------------


def test_sample_path_found_without_importing_gensim():
    import sys

    path = sample_dump_path()
    assert path.is_file()
    assert path.name == "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    assert resolve_source("sample") == path
    assert sample_dump_path("bg").name == "bgwiki-latest-pages-articles-shortened.xml.bz2"
    assert sample_dump_path("en-tables").name == "enwiki-table-markup.xml.bz2"
    assert "gensim" not in sys.modules
    with pytest.raises(IngestError, match="unknown sample"):
        sample_dump_path("xx")


def test_sample_articles_are_clean_ns0_non_redirect(sample_articles):
    raw = _raw_pages(sample_dump_path())
    assert len(raw) == 206
    redirect_titles = {p["title"] for p in raw if p["redirect"]}
    assert len(redirect_titles) == 100
    ns_by_id = {p["id"]: p["ns"] for p in raw}

    titles = [a.title for a in sample_articles]
    # 106 non-redirect pages, 8 of them disambiguation pages.
    assert len(sample_articles) == 98
    assert titles[0] == "Anarchism"
    assert {"Autism", "Albert Einstein", "Algorithm"} <= set(titles)
    assert not redirect_titles & set(titles)
    assert all(ns_by_id[a.article_id] == 0 for a in sample_articles)
    assert not {"Alien", "Austin (disambiguation)", "Aa River"} & set(titles)
    assert len({a.article_id for a in sample_articles}) == len(sample_articles)

    for article in sample_articles:
        assert article.text.strip() == article.text and article.text
        for bad in MARKUP_LEFTOVERS:
            assert bad not in article.text, (article.title, bad)
        assert "\n\n\n" not in article.text
        assert "  " not in article.text

    anarchism = sample_articles[0].text
    assert anarchism.startswith("Anarchism is a political philosophy")
    assert "\n\n" in anarchism  # paragraphs kept
    # Link text kept, link target dropped: [[Stateless society|stateless societies]].
    assert "stateless societies" in anarchism


def test_limit_and_progress_flag():
    first = list(read_articles("sample", limit=3, progress=True))
    assert [a.title for a in first] == ["Anarchism", "Autism", "Albedo"]
    assert list(read_articles("sample", limit=0)) == []


def test_bulgarian_excerpt_is_utf16_and_cyrillic():
    articles = list(read_articles(sample_dump_path("bg")))
    assert len(articles) >= 1
    assert articles[0].title == "Григориански календар"
    assert re.search("[а-яА-Я]{5,}", articles[0].text)
    assert all(not a.title.startswith("Уикипедия:") for a in articles)  # project namespace dropped


def test_table_markup_excerpt_without_siteinfo_loses_tables():
    articles = list(read_articles(sample_dump_path("en-tables")))
    assert len(articles) == 5
    for article in articles:
        for bad in ("{|", "|}", "|-", "||", "wikitable", "colspan", "rowspan"):
            assert bad not in article.text, (article.title, bad)
    first = articles[0]
    assert first.title == "Constructive vote of no confidence"
    assert "Weimar Republic" in first.text


# --- rules on a hand-written dump -------------------------------------------------------------------


def test_tiny_dump_filters_and_cleans():
    articles = list(read_articles(TINY))
    assert [(a.article_id, a.title) for a in articles] == [(101, "Tiny article"), (108, "Second article")]
    tiny, second = articles
    paragraphs = tiny.text.split("\n\n")
    assert paragraphs[0] == (
        "Tiny article (born 1900) is a page about markup. It has bold and italic words."
    )
    assert paragraphs[1] == "The second paragraph mentions the capital and Lyons."
    assert "first list item\nsecond list item with Rome" in tiny.text
    for gone in ("History", "Header cell", "table cell", "caption", "Source", "Plain reference",
                 "hidden comment", "Kleiner", "Test pages", "citation line", "Infobox", "TOC"):  # fmt: skip
        assert gone not in tiny.text, gone
    # History dumps: the last revision is the article.
    assert second.text == "The second article is the current revision text.\n\nIt has a second paragraph too."


def test_multistream_bz2_reads_like_plain_xml(tmp_path):
    raw = TINY.read_bytes()
    cut = raw.index(b"<page>", raw.index(b"</page>"))  # stream boundary between two pages
    path = tmp_path / "enwiki-latest-pages-articles-multistream.xml.bz2"
    path.write_bytes(bz2.compress(raw[:cut]) + bz2.compress(raw[cut:]))
    assert list(read_articles(path)) == list(read_articles(TINY))


def test_clean_wikitext_details():
    assert clean_wikitext("[[Файл:Карта.png|мини|Надпис]]Текст [[Категория:Неща]]") == "Текст"
    assert clean_wikitext("[[Bild:X.jpg|thumb|x]]Ein Text.", drop_namespaces=["Datei"]) == "Ein Text."
    assert clean_wikitext("[[Fichero:X.jpg|thumb|x]]Texto.", drop_namespaces=["Fichero"]) == "Texto."
    assert clean_wikitext("See [[:Category:Cats|cat pages]].") == "See cat pages."
    assert clean_wikitext("A&nbsp;b &amp; c <small>d</small> <math>x^2</math>e") == "A b & c d e"
    assert clean_wikitext("a<ul><li>x</li>\n<li>y</li></ul>b") == "a\nx\ny\nb"
    assert clean_wikitext("==Only a heading==\n{{template}}") == ""
    assert clean_wikitext("Intro.\n==See also==\n* [[Other]]\n==History==\nKept.") == "Intro.\n\nKept."
    assert is_disambiguation("Foo may mean:\n* [[A]]\n{{Disambiguation|geo}}")
    assert is_disambiguation("{{hndis|Smith, John}}")
    assert is_disambiguation("{{Set index article}}")
    assert not is_disambiguation("{{Disambiguation needed|date=May 2020}} Text.")
    assert not is_disambiguation("{{Infobox disease}} Text.")


# --- tabular sources ---------------------------------------------------------------------------------


def _rows() -> list[dict]:
    return [
        {"id": "12", "url": "https://en.wikipedia.org/wiki?curid=12", "title": "Anarchism",
         "text": "Anarchism is a philosophy.\n\n\n\nIt  has   history.\r\n\r\nThird\tparagraph.\n"},
        {"id": "25", "url": "u", "title": "Autism", "text": "Autism is a condition."},
        {"id": "39", "url": "u", "title": "Empty", "text": "  \n\n "},
    ]  # fmt: skip


EXPECTED_TABULAR = [
    Article(12, "Anarchism", "Anarchism is a philosophy.\n\nIt has history.\n\nThird paragraph."),
    Article(25, "Autism", "Autism is a condition."),
]


def test_parquet_reader(tmp_path):
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(_rows()), path)
    assert list(read_articles(path)) == EXPECTED_TABULAR
    assert list(read_articles(path, limit=1)) == EXPECTED_TABULAR[:1]


def test_jsonl_reader(tmp_path):
    path = tmp_path / "articles.jsonl"
    rows = [{k: v for k, v in r.items() if k != "url"} for r in _rows()]  # url is optional
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n")
    assert list(read_articles(path)) == EXPECTED_TABULAR


def test_tabular_missing_column(tmp_path):
    pq_path = tmp_path / "no_text.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": "1", "title": "A"}]), pq_path)
    with pytest.raises(IngestError) as exc:
        list(read_articles(pq_path))
    assert "text" in assert_one_line_error(exc, "no_text.parquet")

    jl_path = tmp_path / "no_title.jsonl"
    jl_path.write_text(json.dumps({"id": 1, "text": "x"}) + "\n")
    with pytest.raises(IngestError) as exc:
        list(read_articles(jl_path))
    assert "title" in assert_one_line_error(exc, "no_title.jsonl")

    bad_id = tmp_path / "bad_id.jsonl"
    bad_id.write_text(json.dumps({"id": "abc", "title": "A", "text": "x"}) + "\n")
    with pytest.raises(IngestError) as exc:
        list(read_articles(bad_id))
    assert_one_line_error(exc, "bad_id.jsonl")


# --- bad inputs ----------------------------------------------------------------------------------------


def test_truncated_bz2(tmp_path):
    data = sample_dump_path().read_bytes()
    path = tmp_path / "enwiki-latest-pages-articles.xml.bz2"
    path.write_bytes(data[: len(data) // 8])
    with pytest.raises(IngestError) as exc:
        list(read_articles(path))
    assert "truncated or corrupt bz2" in assert_one_line_error(exc, path.name)


def test_corrupt_bz2(tmp_path):
    garbage = tmp_path / "garbage.xml.bz2"
    garbage.write_bytes(b"this is not bzip2 data at all\n" * 50)
    with pytest.raises(IngestError) as exc:
        list(read_articles(garbage))
    assert "corrupt bz2" in assert_one_line_error(exc, garbage.name)

    data = bytearray(sample_dump_path().read_bytes())
    mid = len(data) // 10
    data[mid : mid + 64] = bytes(64)  # a damaged block in the middle: CRC / stream error
    damaged = tmp_path / "damaged.xml.bz2"
    damaged.write_bytes(bytes(data))
    with pytest.raises(IngestError) as exc:
        list(read_articles(damaged))
    assert "corrupt bz2" in assert_one_line_error(exc, damaged.name)


@pytest.mark.parametrize(
    "content",
    [
        "<mediawiki><siteinfo></siteinfo><page><title>A</title><ns>0</ns><id>1</id>"
        "<revision><id>2</id><text>Some text",  # cut off
        "<mediawiki><page><title>A</title></mediawiki>",  # mismatched tags
        "<rss><item>not a dump</item></rss>",  # another XML format
        "",  # empty file
    ],
)
def test_malformed_xml(tmp_path, content):
    path = tmp_path / "broken.xml"
    path.write_text(content)
    with pytest.raises(IngestError) as exc:
        list(read_articles(path))
    assert "malformed MediaWiki XML" in assert_one_line_error(exc, "broken.xml")


def test_empty_dump(tmp_path):
    path = tmp_path / "empty.xml"
    path.write_text(
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10">'
        "<siteinfo><sitename>W</sitename><namespaces><namespace key=\"0\" /></namespaces></siteinfo>"
        "</mediawiki>"
    )
    with pytest.raises(IngestError) as exc:
        list(read_articles(path))
    assert "no article" in assert_one_line_error(exc, "empty.xml")


def test_missing_path_and_unsupported_extension(tmp_path):
    missing = tmp_path / "nope.xml.bz2"
    with pytest.raises(IngestError) as exc:
        read_articles(missing).__next__()
    assert "no such file" in assert_one_line_error(exc, "nope.xml.bz2")
    with pytest.raises(IngestError) as exc:
        resolve_source(missing)
    assert_one_line_error(exc, "nope.xml.bz2")

    csv = tmp_path / "articles.csv"
    csv.write_text("id,title,text\n1,A,x\n")
    with pytest.raises(IngestError) as exc:
        list(read_articles(csv))
    assert ".csv" in assert_one_line_error(exc, "articles.csv")


# --- snapshot ids --------------------------------------------------------------------------------------


def test_snapshot_id_for(tmp_path):
    assert snapshot_id_for(Path("enwiki-20240601-pages-articles.xml.bz2")) == "enwiki-20240601"
    assert snapshot_id_for(Path("/x/bgwiki-20231101-pages-articles-multistream.xml.bz2")) == "bgwiki-20231101"

    latest = tmp_path / "enwiki-latest-pages-articles.xml.bz2"
    shutil.copy(TINY, latest)
    sid = snapshot_id_for(latest)
    assert re.fullmatch(r"enwiki-[0-9a-f]{12}", sid)
    assert snapshot_id_for(latest) == sid  # deterministic
    copy = tmp_path / "other" / latest.name
    copy.parent.mkdir()
    shutil.copy(latest, copy)
    assert snapshot_id_for(copy) == sid  # content, not location
    latest.write_bytes(latest.read_bytes() + b"\n")
    assert snapshot_id_for(latest) != sid  # content changed

    assert re.fullmatch(r"enwiki-[0-9a-f]{12}", snapshot_id_for(resolve_source("sample")))
    with pytest.raises(IngestError):
        snapshot_id_for(tmp_path / "enwiki-latest-missing.xml")
