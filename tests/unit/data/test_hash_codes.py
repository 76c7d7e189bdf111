"""64-bit codes of the chunk text hashes: parsed from Arrow buffers, equal to the digest's first 16 hex digits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lvm_core.contracts.errors import DataContractError
from lvm_core.data.hash_codes import hash_codes, read_hash_codes


def _digests(n: int) -> list[str]:
    return [hashlib.sha1(f"text {i % 37}".encode()).hexdigest() for i in range(n)]


def test_codes_are_the_first_64_bits_of_the_digest_from_any_container() -> None:
    hashes = _digests(100)
    ref = np.array([int(h[:16], 16) for h in hashes], dtype=np.uint64)
    chunked = pa.chunked_array([pa.array(hashes[:30]), pa.array(hashes[30:])])
    for given in (chunked, pa.array(hashes), pa.array(hashes).slice(0), pl.Series(hashes), np.array(hashes), hashes):
        got = hash_codes(given)
        assert got.dtype == np.uint64
        np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(hash_codes(pa.array(hashes).slice(7, 20)), ref[7:27])  # an offset slice
    np.testing.assert_array_equal(hash_codes(pa.array(hashes, pa.large_string())), ref)
    # equal texts, equal codes; different texts here, different codes
    assert np.unique(hash_codes(hashes)).size == len(set(hashes))


def test_uppercase_hex_is_read_and_non_hex_null_or_short_hashes_are_refused() -> None:
    h = _digests(3)
    np.testing.assert_array_equal(hash_codes([x.upper() for x in h]), hash_codes(h))
    with pytest.raises(DataContractError, match="not hex"):
        hash_codes(["z" * 40])
    with pytest.raises(DataContractError, match="shorter than 16"):
        hash_codes(["abc"])
    with pytest.raises(DataContractError, match="null"):
        hash_codes(pa.array([h[0], None]))


def test_read_hash_codes_streams_a_parquet_column_batch_by_batch(tmp_path: Path) -> None:
    hashes = _digests(1000)
    path = tmp_path / "chunks.parquet"
    pq.write_table(pa.table({"text_hash": hashes, "x": np.arange(1000)}), path, row_group_size=300)
    got = read_hash_codes(path, batch_rows=128)
    np.testing.assert_array_equal(got, hash_codes(hashes))
