"""Join keys from dicts (Gantry's ``JoinKey.from_dict``): the published vectors hold, the key
does not depend on key order or on how a number is spelled, and non-JSON is refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.sdk.join_keys import JoinKey, join_key_from_dict

VECTORS = Path(__file__).resolve().parents[2] / "ingest" / "wire" / "join_key_vectors.json"


def _vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"]
    return vectors


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: v["canonical"][:30])
def test_the_published_vectors_hold(vector: dict[str, Any]) -> None:
    # The expected key is hashed here from the hand-written canonical text, not by the code.
    expected = "jk1_" + hashlib.sha256(vector["canonical"].encode()).hexdigest()[:32]
    assert vector["join_key"] == expected
    assert JoinKey.from_dict(vector["value"]) == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53 - 1), 2**53 - 1) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=5))
def test_the_key_ignores_key_order(value: dict[str, Any]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert join_key_from_dict(value) == join_key_from_dict(reordered)


def test_numbers_are_keyed_by_value_not_spelling() -> None:
    assert JoinKey.from_dict({"n": 1}) == JoinKey.from_dict({"n": 1.0})
    assert JoinKey.from_dict({"n": 1}) != JoinKey.from_dict({"n": "1"})


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"x": float("nan")}, "not representable"),
        ({1: "a"}, "keys must be strings"),
        ({"x": object()}, "unsupported type"),
        ({"x": 2**60}, "safe integer"),
    ],
)
def test_what_is_not_json_is_refused(value: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        join_key_from_dict(value)
