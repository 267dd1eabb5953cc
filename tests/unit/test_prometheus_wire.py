"""The remote-write decoder: the fast path for Prometheus's sample shape reads the same as the
generic protobuf reader, other shapes still decode, and truncated input is a WireError, never
another exception (which the gateway would turn into a 500)."""

from __future__ import annotations

import random
import struct

import pytest

from services.gateway.prometheus import wire


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 two's complement, as protobuf writes negatives
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _request(series, sample=lambda t, v: b"\x09" + struct.pack("<d", v) + b"\x10" + _varint(t)) -> bytes:
    msg = b""
    for labels, points in series:
        ts = b"".join(_field(1, _field(1, k.encode()) + _field(2, v.encode())) for k, v in labels.items())
        msg += _field(1, ts + b"".join(_field(2, sample(t, v)) for t, v in points))
    return msg


def _random_series(rng: random.Random):
    stamps = [0, 1, -5, 2**40, 1_796_404_416_000, -(2**40)]
    return [
        (
            {"__name__": "m", "host": f"h{i}", "x": "y" * rng.randint(0, 200)},
            [(rng.choice(stamps), rng.random()) for _ in range(rng.randint(0, 5))],
        )
        for i in range(rng.randint(0, 4))
    ]


def test_fast_and_generic_paths_read_alike():
    rng = random.Random(7)
    for _ in range(200):
        series = _random_series(rng)
        fast = wire.write_request(_request(series), 10**6, 10**7)
        # timestamp before value, and an unknown trailing field: not the fast path's shape
        swapped = _request(series, lambda t, v: b"\x10" + _varint(t) + b"\x09" + struct.pack("<d", v) + b"\x18\x01")
        assert fast == wire.write_request(swapped, 10**6, 10**7) == series


def test_truncated_or_corrupt_input_is_a_wire_error():
    rng = random.Random(11)
    for _ in range(50):
        raw = _request(_random_series(rng))
        for cut in range(len(raw)):
            try:
                wire.write_request(raw[:cut], 10**6, 10**7)
            except wire.WireError:
                pass
        flipped = bytearray(raw)
        if flipped:
            flipped[rng.randrange(len(flipped))] ^= 0xFF
            try:
                wire.write_request(bytes(flipped), 10**6, 10**7)
            except wire.WireError:
                pass


def test_timestamps_beyond_what_a_timestamptz_holds_are_refused():
    with pytest.raises(wire.WireError, match="outside"):
        wire.write_request(_request([({"__name__": "m"}, [(1 << 62, 1.0)])]), 10, 10)
    assert wire.write_request(_request([({"__name__": "m"}, [(wire.MAX_MS, 1.0)])]), 10, 10)


def test_limits_on_series_and_samples():
    many = _request([({"__name__": "m", "host": str(i)}, [(i, 0.0)]) for i in range(5)])
    with pytest.raises(wire.WireError, match="more than"):
        wire.write_request(many, 4, 100)
    with pytest.raises(wire.WireError, match="more than"):
        wire.write_request(many, 100, 4)
