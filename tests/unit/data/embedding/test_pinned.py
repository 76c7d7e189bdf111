"""The build's encoder pinned once: its fingerprint read from the model's files, and a worker held to it."""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lvm_core.contracts.build_options import BuildConfig, BuildOptions
from lvm_core.data.embedding import pinned as embedding_pinned
from lvm_core.data.embedding.encoder import load_encoder
from lvm_core.data.embedding.pinned import PinnedEncoder, PinnedEncoderError, load_pinned, pin_encoder


def test_pinned_fingerprint_is_the_one_the_loaded_encoder_reports():
    pinned = pin_encoder(None, device="cpu")
    assert pinned.spec == "all-MiniLM-L6-v2@torch"
    assert pinned.fingerprint == load_encoder("all-MiniLM-L6-v2@torch", device="cpu").fingerprint
    assert pin_encoder("all-MiniLM-L6-v2@torch-fp32").fingerprint == pinned.fingerprint


def test_auto_is_decided_once_by_the_pinning_process():
    cpu, gpu = pin_encoder("all-MiniLM-L6-v2", device="cpu"), pin_encoder("all-MiniLM-L6-v2", device="cuda")
    assert (cpu.fingerprint.precision, gpu.fingerprint.precision) == ("fp32", "fp16")
    assert gpu.spec == "all-MiniLM-L6-v2@torch-fp16" and cpu.fingerprint.id != gpu.fingerprint.id
    int8 = pin_encoder("@onnx-int8")
    assert (int8.spec, int8.fingerprint.backend, int8.fingerprint.precision) == ("all-MiniLM-L6-v2@onnx-int8", "onnx", "int8")
    assert int8.fingerprint.weights_digest == cpu.fingerprint.weights_digest


class _OtherEncoder:
    def __init__(self, pinned: PinnedEncoder):
        self.fingerprint = replace(pinned.fingerprint, weights_digest="cd" * 32)


def test_a_worker_with_another_fingerprint_fails_at_once_naming_itself(monkeypatch):
    pinned = pin_encoder(None, device="cpu")
    monkeypatch.setattr(embedding_pinned, "load_encoder", lambda spec, cache_dir=None: _OtherEncoder(pinned))
    with pytest.raises(PinnedEncoderError) as err:
        load_pinned(pinned)
    msg = str(err.value)
    assert f"{socket.gethostname()} (pid {os.getpid()})" in msg
    assert "weights=cdcdcdcdcdcd" in msg and pinned.fingerprint.describe() in msg
    assert err.value.permanent  # a task never retries it


def test_a_worker_that_cannot_run_the_pinned_backend_fails_naming_itself():
    pinned = pin_encoder(None, device="cuda")  # pinned by a GPU machine: fp16
    if embedding_pinned._cuda_available():
        pytest.skip("this machine can run fp16")
    with pytest.raises(PinnedEncoderError, match=rf"worker {socket.gethostname()} \(pid {os.getpid()}\) cannot load .*CUDA"):
        load_pinned(pinned)


def test_embed_step_refuses_another_fingerprint_before_writing(tmp_path: Path, monkeypatch):
    from lvm_core.data.build.embed import embed_shard_step, embed_shard_work_dir

    chunks = tmp_path / "chunks.parquet"
    pq.write_table(pa.table({"text": ["a b c"], "text_hash": ["h"]}), chunks)
    config = BuildConfig.from_parts("sample", str(tmp_path / "data"), None, None, BuildOptions())
    pinned = pin_encoder(None, device="cpu")
    monkeypatch.setattr(embedding_pinned, "load_encoder", lambda spec, cache_dir=None: _OtherEncoder(pinned))
    out = embed_shard_work_dir(str(chunks), config, pinned)
    with pytest.raises(PinnedEncoderError):
        embed_shard_step(str(chunks), config, out, tmp_path / "data", pinned=pinned)
    assert not out.exists() or not any(out.iterdir())


def test_the_hash_test_encoder_pins_to_its_own_fingerprint_without_model_files():
    """Benchmarks build with `--encoder hash-test`: no model folder to read, and workers load the same encoder."""
    from lvm_core.data.embedding.encoder import load_encoder
    from lvm_core.data.embedding.hash_encoder import HASH_TEST_FINGERPRINT
    from lvm_core.data.embedding.pinned import pin_encoder

    pinned = pin_encoder("hash-test")
    assert pinned.fingerprint == HASH_TEST_FINGERPRINT == load_encoder(pinned.spec).fingerprint
