"""The snapshot's sentence-splitter language, read from its id."""

from __future__ import annotations

import pytest

from lvm_core.data.build.source import wiki_language


@pytest.mark.parametrize(
    ("snapshot_id", "lang"),
    [("bgwiki-20240601", "bg"), ("enwiki-a53f4648dec4", "en"), ("dewiki-20250101", "de"), ("articles-0a1b2c", "en")],
)
def test_wiki_language_from_snapshot_id(snapshot_id: str, lang: str):
    assert wiki_language(snapshot_id) == lang
