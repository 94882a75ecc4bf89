"""The store's transcoder decodes exactly as eventsourcing's JSONTranscoder does, but for
NaN and Infinity, which are not JSON, and floats, which the store never writes."""

from __future__ import annotations

import json
from datetime import UTC

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)
from hypothesis import given
from hypothesis import strategies as st

from journey.transcoding import FastJSONTranscoder


def registered(transcoder: JSONTranscoder) -> JSONTranscoder:
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return transcoder


LIBRARY, FAST = registered(JSONTranscoder()), registered(FastJSONTranscoder())

KEYS = st.sampled_from(["_type_", "_data_", "a", "b"]) | st.text(max_size=4)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.decimals(allow_nan=False, allow_infinity=False)  # no floats: the store writes none
    | st.datetimes(timezones=st.just(UTC)) | st.uuids(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=10,
)


def decodes_alike(text: bytes) -> None:
    try:
        expected = LIBRARY.decode(text)
    except Exception as exc:  # the library refuses it: so must we, alike
        with pytest.raises(type(exc)):
            FAST.decode(text)
    else:
        assert FAST.decode(text) == expected


@given(VALUES)
def test_every_stored_value_decodes_the_same(value):
    decodes_alike(LIBRARY.encode(value))


@given(VALUES, VALUES)
def test_hand_made_type_shapes_decode_the_same(data, other):
    """Objects that look like transcoded values (or nearly) in the stored JSON."""
    for shape in ({"_type_": "decimal_str", "_data_": "1.5", "x": data},
                  {"_type_": 1, "_data_": "x"}, {"_type_": "x"}, {"_data_": 1, "b": 2}):
        decodes_alike(LIBRARY.encode([shape, data, other]))


@pytest.mark.parametrize("number", ["1.5", "1e400", "-0.0", "2E3"])
def test_a_number_with_a_fraction_or_exponent_is_refused(number):
    """The library reads floats; Journey's events hold none (amounts are decimal text), so
    one in a stored state was put there by hand: `1e400` read as infinity hashed as the
    null it replaced (journey/integrity.py)."""
    text = f'{{"a": [1, {number}]}}'.encode()
    assert LIBRARY.decode(text)
    with pytest.raises(ValueError, match="is not a number the store writes"):
        FAST.decode(text)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_constant_that_is_not_json_is_refused(constant):
    """The library reads NaN and Infinity (Python's parser does); the store never writes
    them, so one in a stored state was put there by hand (journey/integrity.py)."""
    text = f'{{"a": [1, {constant}]}}'.encode()
    assert LIBRARY.decode(text)
    with pytest.raises(ValueError, match="is not JSON"):
        FAST.decode(text)


def test_an_unknown_type_name_is_the_library_error():
    text = json.dumps({"a": {"_type_": "nothing_known", "_data_": 1}}).encode()
    with pytest.raises(TranscodingNotRegisteredError):
        LIBRARY.decode(text)
    with pytest.raises(TranscodingNotRegisteredError):
        FAST.decode(text)
