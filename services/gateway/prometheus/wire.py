"""Decoding a remote-write 1.0 request by hand: the snappy block format and the few protobuf
messages it carries (WriteRequest, TimeSeries, Label, Sample), so no codec dependency is needed.
Every malformed input raises WireError with a reason; sizes are checked before allocating."""

from __future__ import annotations

import struct


class WireError(ValueError):
    pass


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 64 bits")


def snappy_decode(data: bytes, max_len: int) -> bytes:
    """The snappy block format (what remote-write uses, not the framed stream format)."""
    n, pos = _uvarint(data, 0)
    if n > max_len:
        raise WireError(f"decompressed size {n} over the limit of {max_len} bytes")
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                if pos + extra > len(data):
                    raise WireError("truncated literal length")
                length = int.from_bytes(data[pos : pos + extra], "little")
                pos += extra
            length += 1
            if pos + length > len(data):
                raise WireError("truncated literal")
            out += data[pos : pos + length]
            pos += length
            continue
        if kind == 1:
            if pos >= len(data):
                raise WireError("truncated copy")
            length = 4 + ((tag >> 2) & 7)
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        else:
            size = 2 if kind == 2 else 4
            if pos + size > len(data):
                raise WireError("truncated copy")
            length = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + size], "little")
            pos += size
        if offset == 0 or offset > len(out):
            raise WireError("copy offset outside the output")
        if len(out) + length > n:
            raise WireError("output longer than its declared size")
        start = len(out) - offset
        if offset >= length:
            out += out[start : start + length]
        else:  # overlapping copy: a repeated pattern
            for i in range(length):
                out.append(out[start + i])
    if len(out) != n:
        raise WireError(f"decompressed {len(out)} bytes, declared {n}")
    return bytes(out)


def _fields(buf: bytes):
    """(field number, wire type, value) of one protobuf message; bytes for length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = _uvarint(buf, pos)
        field, wt = key >> 3, key & 7
        if wt == 0:
            v, pos = _uvarint(buf, pos)
            yield field, wt, v
        elif wt == 1:
            if pos + 8 > len(buf):
                raise WireError("truncated 64-bit field")
            yield field, wt, buf[pos : pos + 8]
            pos += 8
        elif wt == 2:
            length, pos = _uvarint(buf, pos)
            if pos + length > len(buf):
                raise WireError("truncated length-delimited field")
            yield field, wt, buf[pos : pos + length]
            pos += length
        elif wt == 5:
            if pos + 4 > len(buf):
                raise WireError("truncated 32-bit field")
            pos += 4
        else:
            raise WireError(f"unsupported protobuf wire type {wt}")


def _text(b: object) -> str:
    if not isinstance(b, bytes):
        raise WireError("a label is not a string")
    try:
        return b.decode()
    except UnicodeDecodeError:
        raise WireError("a label is not UTF-8") from None


Series = tuple[dict[str, str], list[tuple[int, float]]]  # labels, [(timestamp ms, value)]


def write_request(buf: bytes, max_series: int, max_samples: int) -> list[Series]:
    out: list[Series] = []
    samples = 0
    for field, wt, ts_msg in _fields(buf):
        if field != 1:
            continue  # metadata (field 3) is not kept
        if wt != 2 or not isinstance(ts_msg, bytes):
            raise WireError("timeseries is not a message")
        labels: dict[str, str] = {}
        points: list[tuple[int, float]] = []
        for f, _w, v in _fields(ts_msg):
            if f == 1 and isinstance(v, bytes):
                name = value = ""
                for lf, _, lv in _fields(v):
                    if lf == 1:
                        name = _text(lv)
                    elif lf == 2:
                        value = _text(lv)
                labels[name] = value
            elif f == 2 and isinstance(v, bytes):
                val, t = 0.0, 0
                for sf, sw, sv in _fields(v):
                    if sf == 1 and sw == 1 and isinstance(sv, bytes):
                        val = struct.unpack("<d", sv)[0]
                    elif sf == 2 and sw == 0 and isinstance(sv, int):
                        t = sv - (1 << 64) if sv >= 1 << 63 else sv
                points.append((t, val))
        samples += len(points)
        out.append((labels, points))
        if len(out) > max_series or samples > max_samples:
            raise WireError(f"more than {max_series} series or {max_samples} samples in one request")
    return out
