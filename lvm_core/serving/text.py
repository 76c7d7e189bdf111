"""Texts in, nearest chunks out: the encoder and chunk bank behind `POST /v1/predict/text`.

A model predicts in the vector space of the encoder it was trained with, so the context texts must be
encoded by exactly that encoder (same fingerprint) and the prediction searched among the chunks of the
model's own dataset (the folder recorded on its training run). Both are loaded on first use, once per
model version, and refused with a reason (`TextUnavailable`, answered 503) when they cannot be had. At most
`max_indexes` are kept (least recently used dropped first): a service following an alias for months sees
many versions, and each index holds an encoder and a chunk bank.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lvm_core.contracts.errors import LvmError
from lvm_core.contracts.layout import DatasetPaths
from lvm_core.data.chunking import text_hash
from lvm_core.data.embedding.encoder import load_encoder
from lvm_core.data.retrieval.bank import ChunkBank
from lvm_core.tracking.references import training_dataset


class TextUnavailable(LvmError, RuntimeError):
    """Texts cannot be served for this model (encoder or dataset missing or of another fingerprint)."""

    def __init__(self, message: str, status: int = 503):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class TextIndex:
    """One model version's encoder and the chunk bank of its dataset (texts, titles, article ids)."""

    encoder: Any
    bank: ChunkBank
    texts: Sequence[str]  # by row; a ColumnRows reads only the rows of the hits
    titles: dict[int, str]
    chunk_index: np.ndarray
    casefold: bool
    dataset: str

    def neighbours(self, predictions: np.ndarray, k: int, context_texts: Sequence[str]) -> list[list[dict[str, Any]]]:
        """The k bank chunks nearest each prediction, leaving out chunks with the context's own texts."""
        hashes = {text_hash(t, self.casefold) for t in context_texts}
        own: np.ndarray | list[int] = np.flatnonzero(np.isin(self.bank.text_hash, list(hashes))) if self.bank.text_hash is not None else []
        own_rows = np.asarray(own, dtype=np.int64)
        scores, rows = self.bank.search(predictions, k, exclude_rows=[own_rows] * len(predictions))
        article_ids = self.bank.article_ids
        assert article_ids is not None  # the text bank is built with the chunks' article ids
        found = sorted({int(r) for r in np.asarray(rows).ravel() if r >= 0})
        take = getattr(self.texts, "take", None)
        text_of = dict(zip(found, take(found) if callable(take) else [self.texts[r] for r in found]))
        out = []
        for srow, rrow in zip(scores, rows):
            hits = []
            for score, row in zip(srow, rrow):
                if row < 0:
                    continue
                aid = int(article_ids[row])
                hits.append({"text": text_of[int(row)], "title": self.titles.get(aid), "article_id": aid,
                             "chunk_index": int(self.chunk_index[row]), "row": int(row), "score": float(score)})
            out.append(hits)
        return out


def dataset_dir_of(model: Any) -> Path:
    """The dataset folder recorded on the model's training run (TextUnavailable when there is none)."""
    dataset_dir, _ = training_dataset(model)
    if dataset_dir:
        return Path(dataset_dir)
    raise TextUnavailable(f"{model.describe()}: no dataset recorded on its training run, so there are no chunks to "
                          "search; serve a registered model trained on a built dataset")


class TextSearch:
    """Loads and keeps a `TextIndex` per model version, on first use (seconds: encoder + bank); the
    `max_indexes` most recently used are kept."""

    def __init__(self, device: str = "cpu", max_indexes: int = 4):
        self.device = device
        self.max_indexes = max(1, int(max_indexes))
        # per model version, least recently used first
        self._indexes: collections.OrderedDict[tuple[Any, Any, str], TextIndex] = collections.OrderedDict()
        # per (dataset folder, encoder fingerprint id), while a kept version uses it
        self._by_dataset: weakref.WeakValueDictionary[tuple[str, str], TextIndex] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def index_for(self, model: Any) -> TextIndex:
        key = (model.name, model.version, model.source)
        with self._lock:  # one load at a time; others wait and then find it
            index = self._indexes.get(key)
            if index is None:
                index = self._indexes[key] = self._load(model)
                while len(self._indexes) > self.max_indexes:
                    self._indexes.popitem(last=False)
            else:
                self._indexes.move_to_end(key)
        return index

    def cached(self) -> list[tuple[Any, Any, str]]:
        """The kept versions' keys (name, version, source), least recently used first."""
        with self._lock:
            return list(self._indexes)

    def _load(self, model: Any) -> TextIndex:
        import pyarrow.parquet as pq

        from lvm_core.data.vector_files import load_embeddings
        from lvm_core.io.parquet_rows import ColumnRows

        fp = model.fingerprint
        try:
            encoder = load_encoder(fp, device=self.device)  # the backend (and precision) it names
        except Exception as exc:  # noqa: BLE001 - any failure means: cannot encode for this model
            raise TextUnavailable(f"the encoder {model.describe()} was trained with cannot be loaded "
                                  f"({fp.describe()}): {type(exc).__name__}: {_first_line(exc)}") from exc
        if encoder.fingerprint != fp:
            raise TextUnavailable(f"encoder {fp.model_name!r} loads fingerprint {encoder.fingerprint.id}, but "
                                  f"{model.describe()} was trained with {fp.id}; its vectors would not be comparable")
        root = dataset_dir_of(model)
        shared = self._by_dataset.get((str(root), fp.id))
        if shared is not None:  # champion and challenger trained on one dataset share one bank
            return shared
        paths = DatasetPaths(root)
        try:
            vectors, _ = load_embeddings(root, expected=fp, mmap=True)
            chunks = pq.read_table(paths.chunks, columns=["article_id", "chunk_index", "text_hash"])
            texts = ColumnRows(paths.chunks, "text")  # the hits' texts are read when asked for
            articles = pq.read_table(paths.articles, columns=["article_id", "title"])
        except Exception as exc:  # noqa: BLE001 - gone, unreadable or another encoder's vectors
            raise TextUnavailable(f"the dataset of {model.describe()} ({root}) cannot be used: "
                                  f"{type(exc).__name__}: {_first_line(exc)}") from exc
        bank = ChunkBank(vectors, chunks.column("article_id").to_numpy(),
                         np.asarray(chunks.column("text_hash").to_pylist()))
        titles = dict(zip(articles.column("article_id").to_pylist(), articles.column("title").to_pylist()))
        index = TextIndex(encoder=encoder, bank=bank, texts=texts, titles=titles,
                          chunk_index=chunks.column("chunk_index").to_numpy(), casefold=fp.casefold, dataset=str(root))
        self._by_dataset[(str(root), fp.id)] = index
        return index


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
