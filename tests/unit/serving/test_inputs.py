"""Request bodies: every malformed one is an InputError with a 4xx status, never another exception."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from lvm_core.serving.inputs import InputError, binary_contexts, parse_json, validate_contexts
from lvm_core.serving.settings import ServeSettings

MODEL = SimpleNamespace(name="m", version=1, context_len=3, dim=4)
SETTINGS = ServeSettings(max_batch=8)


def unit(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, MODEL.context_len, MODEL.dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def status_of(body: bytes, binary: bool = False) -> int:
    try:
        if binary:
            binary_contexts(body, MODEL, SETTINGS)
        else:
            validate_contexts(parse_json(body), MODEL, SETTINGS)
    except InputError as exc:
        return exc.status
    return 200


def test_valid_json_and_binary_bodies_give_the_same_contexts():
    x = unit(2)
    from_json = validate_contexts(parse_json(json.dumps({"contexts": x.tolist()}).encode()), MODEL, SETTINGS)
    from_binary = binary_contexts(x.astype("<f4").tobytes(), MODEL, SETTINGS)
    assert from_json.dtype == from_binary.dtype == np.float32
    assert np.array_equal(from_json, x) and np.array_equal(from_binary, x)


@pytest.mark.parametrize("body, status", [
    (b'{"contexts": ' + b"1" * 5000 + b"}", 400),  # past the standard parser's digit limit
    (b"[" * 200_000 + b"]" * 200_000, 400),  # past any parser's nesting depth
    (b'{"contexts": [[[' + b"1" * 30 + b"]]]}", 422),  # an integer past 64 bits
    (b'{"contexts": [[[NaN, 1, 0, 0]]]}', 422),
    (b"\xff\xfe not text", 400),
    (b"", 400),
    (b"[1, 2]", 400),
    (b'{"contexts": "abc"}', 422),
    (b'{"contexts": [{"a": 1}]}', 422),
    (b'{"contexts": [[["1.0", "0", "0", "0"]]]}', 422),  # strings that float conversion would accept
    (b'{"contexts": [[[true, false, false, false]]]}', 422),
    (b'{"contexts": [[[1, 0, 0]]]}', 422),
    (b'{"contexts": [[[[1, 0, 0, 0]]]]}', 422),
])
def test_every_malformed_json_body_is_a_4xx(body: bytes, status: int):
    assert status_of(body) == status


def test_binary_bodies_are_checked_like_json_ones():
    x = unit(9)
    assert status_of(x[:2].tobytes(), binary=True) == 200
    assert status_of(x[:2].tobytes()[:-4], binary=True) == 422  # not a whole number of contexts
    assert status_of(b"", binary=True) == 422
    assert status_of(x.tobytes(), binary=True) == 413  # 9 contexts, limit 8
    nan = x[:1].copy()
    nan[0, 1, 2] = np.nan
    assert status_of(nan.tobytes(), binary=True) == 422
    assert status_of((x[:1] * 2).tobytes(), binary=True) == 422
