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


_DOUBLE = struct.Struct("<d").unpack_from
# What a timestamptz (and a Python datetime) holds, a day inside years 1..9999: an int64 of
# milliseconds holds more, and such a sample is refused here rather than failing at the insert.
MIN_MS, MAX_MS = -62_135_596_800_000 + 86_400_000, 253_402_300_799_000 - 86_400_000


def _sample(msg: bytes, pos: int, end: int) -> tuple[int, float] | None:
    """The shape every Prometheus writes a Sample in (value then timestamp, `09 <8 bytes> 10
    <varint>`), decoded without the generic field loop: the hot path of a write request. None
    for anything else, which the generic decoder then reads (or refuses)."""
    if end - pos < 11 or msg[pos] != 0x09 or msg[pos + 9] != 0x10:
        return None
    val = _DOUBLE(msg, pos + 1)[0]
    t = shift = 0
    p = pos + 10
    while p < end:
        b = msg[p]
        t |= (b & 0x7F) << shift
        p += 1
        if b < 0x80:
            break
        shift += 7
    else:
        return None
    if p != end or shift > 63:
        return None
    return (t - (1 << 64) if t >= 1 << 63 else t), val


def _sample_generic(v: bytes) -> tuple[int, float]:
    val, t = 0.0, 0
    for sf, sw, sv in _fields(v):
        if sf == 1 and sw == 1 and isinstance(sv, bytes):
            val = _DOUBLE(sv)[0]
        elif sf == 2 and sw == 0 and isinstance(sv, int):
            t = sv - (1 << 64) if sv >= 1 << 63 else sv
    return t, val


def _series(msg: bytes) -> Series:
    labels: dict[str, str] = {}
    points: list[tuple[int, float]] = []
    pos, n = 0, len(msg)
    while pos < n:
        # A Sample (field 2, length-delimited) shorter than 128 bytes: tag 0x12, one length byte.
        if msg[pos] == 0x12 and pos + 1 < n and msg[pos + 1] < 0x80:
            end = pos + 2 + msg[pos + 1]
            if end <= n:
                got = _sample(msg, pos + 2, end)
                if got is not None:
                    points.append(got)
                    pos = end
                    continue
        key, pos = _uvarint(msg, pos)
        f, wt = key >> 3, key & 7
        if wt == 2:
            length, pos = _uvarint(msg, pos)
            if pos + length > n:
                raise WireError("truncated length-delimited field")
            v = msg[pos : pos + length]
            pos += length
            if f == 1:
                name = value = ""
                for lf, _, lv in _fields(v):
                    if lf == 1:
                        name = _text(lv)
                    elif lf == 2:
                        value = _text(lv)
                labels[name] = value
            elif f == 2:
                points.append(_sample_generic(v))
            continue  # exemplars, histograms (newer fields) are not kept
        pos += _skip_len(msg, pos, wt)  # a scalar field this reader does not keep
    return labels, points


def _skip_len(msg: bytes, pos: int, wt: int) -> int:
    if wt == 0:
        return _uvarint(msg, pos)[1] - pos
    size = {1: 8, 5: 4}.get(wt)
    if size is None:
        raise WireError(f"unsupported protobuf wire type {wt}")
    if pos + size > len(msg):
        raise WireError("truncated fixed-size field")
    return size


def write_request(buf: bytes, max_series: int, max_samples: int) -> list[Series]:
    out: list[Series] = []
    samples = 0
    for field, wt, ts_msg in _fields(buf):
        if field != 1:
            continue  # metadata (field 3) is not kept
        if wt != 2 or not isinstance(ts_msg, bytes):
            raise WireError("timeseries is not a message")
        labels, points = _series(ts_msg)
        if points and not (MIN_MS <= min(points)[0] and max(points)[0] <= MAX_MS):
            raise WireError(f"a sample timestamp is outside years 1..9999 ({min(points)[0]}..{max(points)[0]} ms)")
        samples += len(points)
        out.append((labels, points))
        if len(out) > max_series or samples > max_samples:
            raise WireError(f"more than {max_series} series or {max_samples} samples in one request")
    return out
