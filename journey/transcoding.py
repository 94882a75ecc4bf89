"""The store's JSON transcoder: the library's, decoding faster.

eventsourcing's ``JSONTranscoder`` decodes with an object hook, a Python call for every
JSON object; decoding was three fifths of a point-in-time answer read from cold. This one
lets the C decoder read the text and then revives only the objects that stand for a
transcoded value (``{"_type_": ..., "_data_": ...}``), bottom-up, with the library's own
``_decode_obj``: the same values and errors for any JSON the library writes. (Text it
cannot write may differ: of an object with a repeated key the C decoder keeps only the last
value, unchecked, and this revival recurses in Python, so about half the library's
nesting depth; and NaN and Infinity, which the library reads though they are not JSON, are
refused, and so is any number with a fraction or an exponent: the store holds no floats,
so one in a stored state was put there by hand.)
Encoding is the library's.
"""

from __future__ import annotations

import json
from typing import Any

from eventsourcing.persistence import JSONTranscoder

from journey.integrity import refuse_constant, refuse_float

_CONTAINERS = (dict, list)


class FastJSONTranscoder(JSONTranscoder):
    def __init__(self) -> None:
        super().__init__()
        # NaN and Infinity are not JSON, and the store never writes them: a stored state
        # holding one was altered (journey/integrity.py), and is not read as a number.
        self.plain_decoder = json.JSONDecoder(
            parse_constant=refuse_constant, parse_float=refuse_float
        )

    def decode(self, data: bytes) -> Any:
        value = self.plain_decoder.decode(data.decode("utf8"))
        return self.revive(value) if type(value) in _CONTAINERS else value

    def revive(self, value: Any) -> Any:
        """``value`` (a dict or list) as the object hook would have left it."""
        if type(value) is list:
            return [self.revive(v) if type(v) in _CONTAINERS else v for v in value]
        if len(value) == 2 and type(value.get("_type_")) is str and "_data_" in value:
            data = value["_data_"]
            if type(data) in _CONTAINERS:
                data = self.revive(data)
            transcoding = self.names.get(value["_type_"])
            if transcoding is None:  # the library's error
                return self._decode_obj({"_type_": value["_type_"], "_data_": data})
            return transcoding.decode(data)
        revived = {k: self.revive(v) if type(v) in _CONTAINERS else v for k, v in value.items()}
        return self._decode_obj(revived) if len(revived) == 2 else revived
