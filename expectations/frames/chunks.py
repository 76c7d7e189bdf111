"""Frame of the ``chunks`` suite: chunk_id, article_id, chunk_index, n_words, text_chars (stripped text length).

The text itself is not kept: its stripped length is all the suite checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from expectations.frames.common import require_file
from lvm_core.contracts.errors import DataContractError


def read_chunks(path: Path) -> pd.DataFrame:
    """chunk rows without their text: the text is reduced to its stripped length."""
    require_file(path)
    cols = ["chunk_id", "article_id", "chunk_index", "text", "n_words"]
    try:
        table = pq.read_table(path, columns=cols)
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise DataContractError(f"{path}: cannot read columns {cols}: {exc}") from exc
    text_chars = pc.utf8_length(pc.utf8_trim_whitespace(table["text"]))
    return pd.DataFrame(
        {
            "chunk_id": table["chunk_id"].to_pandas(),
            "article_id": table["article_id"].to_numpy().astype(np.int64),
            "chunk_index": table["chunk_index"].to_numpy().astype(np.int64),
            "n_words": table["n_words"].to_numpy().astype(np.int64),
            "text_chars": text_chars.to_numpy(zero_copy_only=False),
        }
    )
