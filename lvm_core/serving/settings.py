"""What an operator can tune on the service (limits, token, drift window), in one place for the app and the CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

TOKEN_ENV = "LVM_SERVE_TOKEN"
CLIENT_KEY_HEADER = "X-Client-Key"


@dataclasses.dataclass
class ServeSettings:
    max_batch: int = 256  # contexts per request
    max_body_bytes: int = 8 * 1024 * 1024  # checked on Content-Length before reading, and while reading
    unit_norm_tol: float = 1e-3
    feedback_capacity: int = 100_000  # predictions kept for feedback (memory ≈ capacity × D × 4 bytes)
    token: str | None = None  # None: read LVM_SERVE_TOKEN; "" : no token
    max_text_chars: int = 10_000  # per context text of /v1/predict/text
    max_k: int = 50  # neighbours per /v1/predict/text answer
    contexts_path: Path | None = None  # where the received-context window goes for the drift monitor
    contexts_window: int = 5000  # contexts kept in that window
    contexts_flush_s: float = 30.0  # seconds between rewrites of the window file
    inline_body_bytes: int = 128 * 1024  # larger bodies are parsed and checked off the event loop (~0.5 ms of JSON)
    drain_body_bytes: int = 8 * 1024 * 1024  # past the limit: read and dropped (the client sees the 413), then closed
    max_text_indexes: int = 4  # text indexes (encoder + chunk bank) kept, least recently used dropped first
    shutdown_drain_s: float = 20.0  # on SIGTERM: seconds in-flight requests get to finish before they are cut
    access_log: bool = True  # one JSON line per request on the `lvm.serve.access` logger
    torch_threads: int = 1  # torch intra-op threads of a served process (batches are small; see docs/architecture.md)
    docs: bool = True  # /openapi.json and /docs (Swagger UI, its assets from a CDN; the schema itself is local)
