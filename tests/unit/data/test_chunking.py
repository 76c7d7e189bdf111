"""Chunking rules on synthetic text and on the real embedded sample."""

from __future__ import annotations

import statistics
from collections import defaultdict

import pytest

from lvm_core.contracts.layout import CHUNKS_SCHEMA
from lvm_core.data.chunking import (
    ChunkingConfig,
    chunk_articles,
    chunk_id,
    chunk_text,
    normalize_text,
    split_sentences,
    text_hash,
)
from lvm_core.data.ingest.base import Article
from lvm_core.data.ingest.sources import read_articles, sample_dump_path


def sentence(n_words: int, tag: str) -> str:
    """A sentence of exactly `n_words` words, distinguishable by `tag`."""
    return "The " + " ".join(f"{tag}{i}" for i in range(n_words - 2)) + " ends."


def word_counts(text: str, config: ChunkingConfig = ChunkingConfig()) -> list[int]:
    return [len(c.split()) for c in chunk_text(text, config)]


@pytest.fixture(scope="module")
def sample_articles() -> list[Article]:
    return list(read_articles("sample"))


@pytest.fixture(scope="module")
def sample_chunks(sample_articles):
    return chunk_articles(sample_articles)


# --- rules on synthetic text -------------------------------------------------------------------------


def test_chunk_closes_at_min_words_and_short_tail_merges():
    # 10 sentences of 15 words: close at 45 (>= 40), the 15-word tail (< 20) joins the last chunk.
    assert word_counts(" ".join(sentence(15, "a") for _ in range(10))) == [45, 45, 60]


def test_longer_tail_stands_alone():
    # 25 + 25 reaches 40 -> 50; the 25-word tail is >= min_words / 2 and stays a chunk of its own.
    assert word_counts(" ".join(sentence(25, "b") for _ in range(3))) == [50, 25]


def test_tail_merge_never_exceeds_max_words():
    cfg = ChunkingConfig(min_words=40, max_words=60)
    # 50-word chunk + 15-word tail would be 65 > 60: the tail stays alone.
    assert word_counts(sentence(50, "c") + " " + sentence(15, "d"), cfg) == [50, 15]


def test_chunk_closed_before_exceeding_max_words():
    # 30 words, then a 100-word sentence: 130 > 120, so the 30-word chunk closes below min_words.
    assert word_counts(sentence(30, "e") + " " + sentence(100, "f")) == [30, 100]


def test_overlong_sentence_is_split_on_word_boundaries():
    words = [f"w{i}" for i in range(300)]
    chunks = chunk_text(" ".join(words))
    assert [len(c.split()) for c in chunks] == [100, 100, 100]
    assert " ".join(chunks).split() == words  # nothing lost, order kept
    assert word_counts(" ".join(words[:250])) == [84, 83, 83]  # fewest pieces, near-equal


def test_chunks_never_cross_paragraphs():
    p1 = " ".join(sentence(12, "x") for _ in range(2))  # 24 words, below min_words
    p2 = " ".join(sentence(12, "y") for _ in range(5))  # 60 words
    chunks = chunk_text(p1 + "\n\n" + p2)
    assert chunks[0] == p1
    assert all("x0" not in c for c in chunks[1:])
    assert all("y0" in c and "x0" not in c for c in chunks[1:])
    assert [len(c.split()) for c in chunks] == [24, 60]


def test_line_breaks_end_sentences_and_text_is_kept():
    assert split_sentences("First item without stop\nSecond item. Third one!") == [
        "First item without stop",
        "Second item.",
        "Third one!",
    ]
    text = "Alpha beta. Gamma   delta.\nEpsilon\n\nZeta eta."
    assert chunk_text(text) == ["Alpha beta. Gamma delta. Epsilon", "Zeta eta."]
    assert chunk_text("") == [] and chunk_text("\n\n \n") == []


def test_config_validation():
    with pytest.raises(ValueError, match="max_words"):
        ChunkingConfig(min_words=50, max_words=40)
    with pytest.raises(ValueError, match="min_words"):
        ChunkingConfig(min_words=0)
    with pytest.raises(AttributeError):
        ChunkingConfig().min_words = 3  # type: ignore[misc]


def test_hash_ignores_case_spacing_and_compatibility_forms():
    assert normalize_text("  Hello\t\nWORLD  ") == "hello world"
    assert text_hash("Hello   World") == text_hash("hello world\n")
    assert text_hash("ﬁne Straße") == text_hash("FINE STRASSE")  # NFKC + casefold
    assert text_hash("hello world") != text_hash("hello worlds")
    assert len(text_hash("x")) == 40 and int(text_hash("x"), 16) >= 0


def test_cased_hash_keeps_case_and_default_hash_is_unchanged():
    import hashlib
    import unicodedata

    # The default (uncased encoder) is exactly the hash of before: sha1 of NFKC + casefold + single spaces.
    for text in ("Apple pie", "  ﬁne   Straße\n", "Ünïcode TEXT"):
        before = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
        assert text_hash(text) == text_hash(text, casefold=True) == hashlib.sha1(before.encode()).hexdigest()
    # A cased encoder sees "Apple" and "apple" as different inputs, so their hashes differ.
    assert text_hash("Apple", casefold=False) != text_hash("apple", casefold=False)
    assert text_hash("Apple  pie", casefold=False) == text_hash(" Apple pie\n", casefold=False)
    assert normalize_text("  ﬁne  Straße ", casefold=False) == "fine Straße"
    rows = chunk_articles([Article(1, "A", "Apple grows.")], ChunkingConfig(casefold=False)).to_pylist()
    assert rows[0]["text_hash"] == text_hash("Apple grows.", casefold=False) != text_hash("Apple grows.")


def test_chunk_id_is_stable():
    assert chunk_id(12, 0) == "12:0"
    assert chunk_id(12, 7) == chunk_id(12, 7) != chunk_id(127, 0)


def test_chunk_articles_rows_and_article_boundaries():
    a = Article(7, "A", " ".join(sentence(20, "a") for _ in range(4)))  # 40 + 40
    b = Article(3, "B", "Short one.\n\n" + " ".join(sentence(45, "b") for _ in range(2)))
    table = chunk_articles([a, b])
    assert table.schema == CHUNKS_SCHEMA
    rows = table.to_pylist()
    assert [(r["article_id"], r["chunk_index"]) for r in rows] == [(7, 0), (7, 1), (3, 0), (3, 1), (3, 2)]
    assert [r["chunk_id"] for r in rows] == ["7:0", "7:1", "3:0", "3:1", "3:2"]
    for r in rows:
        assert r["n_words"] == len(r["text"].split())
        assert r["text_hash"] == text_hash(r["text"])
        assert ("a0" in r["text"]) == (r["article_id"] == 7)
    assert chunk_articles([]).num_rows == 0


# --- the real sample -----------------------------------------------------------------------------------


def test_sample_chunk_counts_and_bounds(sample_chunks):
    cfg = ChunkingConfig()
    n_words = sample_chunks.column("n_words").to_pylist()
    assert sample_chunks.num_rows >= 8000
    assert max(n_words) <= cfg.max_words
    assert min(n_words) >= 1
    assert 40 <= statistics.mean(n_words) <= 60
    # Most chunks reach min_words; short ones are paragraph ends or short paragraphs.
    assert sum(n >= cfg.min_words for n in n_words) / len(n_words) > 0.7
    assert len(set(sample_chunks.column("chunk_id").to_pylist())) == sample_chunks.num_rows


def test_sample_chunks_stay_inside_one_paragraph_of_their_article(sample_articles, sample_chunks):
    paragraphs = {
        a.article_id: [" ".join(p.split()) for p in a.text.split("\n\n")] for a in sample_articles
    }
    by_article: dict[int, list[dict]] = defaultdict(list)
    for row in sample_chunks.to_pylist():
        by_article[row["article_id"]].append(row)
    assert list(by_article) == [a.article_id for a in sample_articles]  # article order kept
    for article_id, rows in by_article.items():
        assert [r["chunk_index"] for r in rows] == list(range(len(rows)))
        cursor = 0  # chunks appear in paragraph order, each inside a single paragraph
        for row in rows:
            while row["text"] not in paragraphs[article_id][cursor]:
                cursor += 1
                assert cursor < len(paragraphs[article_id]), (article_id, row["text"][:80])
        joined = " ".join(r["text"] for r in rows).split()
        assert joined == " ".join(paragraphs[article_id]).split()  # no word lost or added


def test_sample_chunking_is_deterministic(sample_articles, sample_chunks):
    again = chunk_articles(sample_articles[:20])
    assert again.equals(sample_chunks.slice(0, again.num_rows))


def test_bulgarian_excerpt_chunks():
    article = next(iter(read_articles(sample_dump_path("bg"))))
    cfg = ChunkingConfig(language="bg")
    chunks = chunk_text(article.text, cfg)
    assert len(chunks) >= 10
    assert all(len(c.split()) <= cfg.max_words for c in chunks)
    assert " ".join(chunks).split() == article.text.split()
