"""Work keys of the chunk and embed shards: what decides whether a finished shard may be reused."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lvm_core.contracts.build_options import BuildConfig, BuildOptions
from lvm_core.data.build.source import SourceInfo


def _config(tmp_path: Path, encoder: str | None) -> BuildConfig:
    return BuildConfig.from_parts("sample", str(tmp_path / "data"), None, None, BuildOptions(encoder=encoder))


def _model_folder(root: Path, weights: bytes) -> Path:
    """A model folder as far as the build reads it without loading it: config, tokenizer settings, weights."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"hidden_size": 8}))
    (root / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    (root / "model.safetensors").write_bytes(weights)
    return root


def _articles_file(tmp_path: Path) -> Path:
    path = tmp_path / "articles.parquet"
    text = "Apples grow on trees in many orchards. " * 12
    pq.write_table(pa.table({"article_id": ["1"], "title": ["Apple"], "text": [text]}), path)
    return path


SOURCE = SourceInfo(path=Path("sample.xml.bz2"), snapshot_id="enwiki-20240601", digest="d" * 64, dataset_id="x")


@pytest.mark.parametrize("spec", ["all-MiniLM-L6-v2@onnx-int8", "@onnx-int8", "all-MiniLM-L6-v2@torch"])
def test_chunk_step_reads_the_model_of_a_spec_with_a_backend(tmp_path: Path, spec: str):
    from lvm_core.data.build.chunk import chunk_shard_step, chunk_shard_work_dir

    articles = _articles_file(tmp_path)
    config = _config(tmp_path, spec)
    out = chunk_shard_work_dir(str(articles), SOURCE, config)
    # the backend does not change the chunks: the same work as the bare model's
    assert out == chunk_shard_work_dir(str(articles), SOURCE, _config(tmp_path, "all-MiniLM-L6-v2"))
    record = chunk_shard_step(str(articles), SOURCE, config, out)
    assert record.articles == 1 and record.chunks >= 1


def test_embed_work_key_follows_the_weights_not_the_encoder_name(tmp_path: Path):
    from lvm_core.data.build.embed import embed_shard_work_dir

    folder = _model_folder(tmp_path / "model", b"weights-1")
    config = _config(tmp_path, str(folder))
    before = embed_shard_work_dir("chunks.parquet", config)
    (folder / "model.safetensors").write_bytes(b"weights-2")  # retrained in place: same name, other vectors
    assert embed_shard_work_dir("chunks.parquet", config) != before
    # another backend of the same weights is other work; the same fingerprint under another spelling is not
    assert embed_shard_work_dir("chunks.parquet", _config(tmp_path, f"{folder}@onnx-int8")) != before
    assert embed_shard_work_dir("chunks.parquet", _config(tmp_path, f"{folder}@torch")) == embed_shard_work_dir(
        "chunks.parquet", _config(tmp_path, f"{folder}@torch-fp32")
    )
