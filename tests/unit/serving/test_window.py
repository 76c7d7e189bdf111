"""The served-contexts window the drift monitor reads: the newest contexts of one shape with their client
groups, flushed only when changed and without blocking requests, reloaded after a restart, one file per
replica, and old plain .npy files still readable."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.vectors import random_unit

pytestmark = pytest.mark.slow


def test_context_window_keeps_the_newest_of_one_shape(tmp_path: Path):
    from lvm_core.io.context_window_file import client_group, read_window
    from lvm_core.serving.window import ContextWindow

    w = ContextWindow(tmp_path / "w.npy", capacity=5, flush_s=60)
    a = random_unit(1, 7, 2, 4)
    w.add(a[:3], client="alice")
    w.add(a[3:])  # no client key
    ctx, groups = w.snapshot()
    assert np.array_equal(ctx, a[-5:])
    assert groups.tolist() == [client_group("alice")] + [0] * 4
    assert w.flush() and not w.flush()  # unchanged since: not rewritten
    on_disk, disk_groups = read_window(tmp_path / "w.npy")
    assert np.array_equal(on_disk, a[-5:]) and disk_groups is not None and disk_groups[0] == client_group("alice") != 0
    assert b"alice" not in (tmp_path / "w.npy").read_bytes()  # a digest is stored, never the key
    b = random_unit(2, 2, 3, 4)  # another model's shape starts a new window
    w.add(b, client=np.array([client_group("x"), client_group("y")], dtype=np.uint64))
    ctx, groups = w.snapshot()
    assert np.array_equal(ctx, b) and len(set(groups.tolist())) == 2


def test_restart_reloads_the_window_and_old_files_read_as_ungrouped(tmp_path: Path, caplog):
    from lvm_core.io.context_window_file import read_window
    from lvm_core.serving.window import ContextWindow

    a = random_unit(3, 6, 2, 4)
    w = ContextWindow(tmp_path / "w.npy", capacity=10, flush_s=60)
    w.add(a, client="bob")
    w.stop()  # the service stops: the window is written
    again = ContextWindow(tmp_path / "w.npy", capacity=4, flush_s=60)  # the restarted service
    ctx, groups = again.snapshot()
    assert np.array_equal(ctx, a[-4:]) and len(set(groups.tolist())) == 1 and groups[0] != 0
    assert not again.flush()  # reloaded, not changed: not rewritten

    np.save(tmp_path / "old.npy", a)  # a window written before groups were recorded
    plain, no_groups = read_window(tmp_path / "old.npy")
    assert no_groups is None and np.array_equal(plain, a)
    old = ContextWindow(tmp_path / "old.npy", capacity=10, flush_s=60)
    assert "no groups" in caplog.text
    ctx, groups = old.snapshot()
    assert np.array_equal(ctx, a) and not groups.any()  # kept, as requests without a client key
    (tmp_path / "broken.npy").write_bytes(b"not a numpy file")
    assert ContextWindow(tmp_path / "broken.npy").snapshot()[0].size == 0  # starts empty, logged


def test_a_folder_gets_one_file_per_replica(tmp_path: Path, monkeypatch):
    from lvm_core.io.context_window_file import REPLICA_ENV
    from lvm_core.serving.window import ContextWindow

    monkeypatch.setenv(REPLICA_ENV, "serve-1")
    w = ContextWindow(tmp_path / "served", capacity=5, flush_s=60)
    assert w.path == tmp_path / "served" / "contexts-serve-1.npy"
    monkeypatch.setenv(REPLICA_ENV, "serve/2")  # made file-name safe
    assert ContextWindow(tmp_path / "served").path.name == "contexts-serve_2.npy"


def test_the_flush_copies_and_writes_without_the_request_lock(tmp_path: Path, monkeypatch):
    """While a flush is writing (held here until released), requests still add contexts at once."""
    from lvm_core.io import storage
    from lvm_core.io.context_window_file import read_window
    from lvm_core.serving.window import ContextWindow

    w = ContextWindow(tmp_path / "w.npy", capacity=1000, flush_s=60)
    w.add(random_unit(4, 500, 5, 16))
    writing, release = threading.Event(), threading.Event()
    real_write = storage.write_npy

    def slow_write(path, array):
        writing.set()
        assert release.wait(10)
        real_write(path, array)

    monkeypatch.setattr(storage, "write_npy", slow_write)  # the module the window writes through
    flusher = threading.Thread(target=w.flush)
    flusher.start()
    assert writing.wait(10)
    t0 = time.perf_counter()
    w.add(random_unit(5, 3, 5, 16), client="carol")  # would block until release if the flush held the lock
    assert time.perf_counter() - t0 < 1.0 and not w._lock.locked()
    release.set()
    flusher.join(10)
    ctx, _ = read_window(tmp_path / "w.npy")
    assert len(ctx) == 500  # the flush wrote the window as it was when it started
    assert w.flush() and len(read_window(tmp_path / "w.npy")[0]) == 503  # the new contexts follow
