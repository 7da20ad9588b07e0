"""PostgreSQL's binary COPY format for a DataFrame, each column encoded by its declared type
(schema.py), never by its values: an all-NULL column is still ``bigint``. Rows are assembled per
chunk in a numpy byte matrix (fields at their widest, the padding then dropped with one mask)."""

import json
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Optional, Union

import numpy as np
import pandas as pd

# The file header (signature, flags, header extension length) and trailer (field count -1).
HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
TRAILER = b"\xff\xff"
# Rows per chunk, and the bytes a chunk's padded matrix may take before it is split.
CHUNK_ROWS = 100_000
CHUNK_BYTES = 16 << 20
_PG_EPOCH_MICROS = 946_684_800_000_000  # 2000-01-01, PostgreSQL's timestamp zero, in Unix microseconds
_NULL = b"\xff\xff\xff\xff"  # a NULL field: length -1, no value
_TEXT_OID = 25  # an array's element type

Chunk = Union[bytes, np.ndarray]


def copy_chunks(frame: pd.DataFrame, types: Sequence[str]) -> Iterator[Chunk]:
    """The COPY data of ``frame``, whose columns are declared as ``types``, chunk by chunk."""
    if len(types) != len(frame.columns):
        raise ValueError(f"{len(frame.columns)} columns for {len(types)} declared types")
    fields = [encoder(kind)(frame.iloc[:, position]) for position, kind in enumerate(types)]
    yield HEADER
    for start in range(0, len(frame), CHUNK_ROWS):
        yield from _rows(fields, start, min(len(frame), start + CHUNK_ROWS))
    yield TRAILER


def encoder(kind: str) -> Callable[[pd.Series], "_Field"]:
    """The encoder of a declared type; KeyError for a type COPY cannot write."""
    return _ENCODERS[kind]


class _Fixed:
    """bigint, integer, timestamp: a length and a big-endian number (``-1`` and nothing for NULL).
    For rows ``start:stop`` (as :class:`_Variable`): ``widths`` (None: all are ``width``, the widest)
    and ``fill``, writing the fields left-aligned into a (rows, width) block."""

    def __init__(self, numbers: np.ndarray, null: Optional[np.ndarray], size: int) -> None:
        self._numbers = numbers
        self._null = null
        self._size = size
        self._dtype = np.dtype([("length", ">i4"), ("value", f">i{size}")])

    def widths(self, start: int, stop: int) -> Optional[np.ndarray]:
        if self._null is None or not self._null[start:stop].any():
            return None
        return np.where(self._null[start:stop], 4, 4 + self._size)

    def width(self, start: int, stop: int) -> int:
        return 4 + self._size

    def fill(self, block: np.ndarray, start: int, stop: int, widths: Optional[np.ndarray]) -> None:
        fields = np.empty(stop - start, dtype=self._dtype)
        fields["value"] = self._numbers[start:stop]
        fields["length"] = self._size if widths is None else np.where(widths == 4, -1, self._size)
        block[:] = fields.view(np.uint8).reshape(stop - start, 4 + self._size)


class _Variable:
    """text, text[], jsonb: each distinct value's field made once; the rows' codes pick them."""

    def __init__(self, codes: np.ndarray, encoded: list[bytes]) -> None:
        fields = [_NULL if value is None else len(value).to_bytes(4, "big") + value for value in encoded]
        self._codes = np.where(codes < 0, len(fields), codes)  # missing -> NULL
        self._fields = np.array(fields + [_NULL], dtype=object)
        self._widths = np.array([len(field) for field in self._fields], dtype=np.int64)

    def widths(self, start: int, stop: int) -> Optional[np.ndarray]:
        return self._widths[self._codes[start:stop]]

    def width(self, start: int, stop: int) -> int:
        return int(self.widths(start, stop).max(initial=0))

    def fill(self, block: np.ndarray, start: int, stop: int, widths: Optional[np.ndarray]) -> None:
        data = b"".join(self._fields[self._codes[start:stop]])
        # Row-major, the first ``width`` bytes of each row are exactly the fields in row order.
        block[np.arange(block.shape[1]) < widths[:, None]] = np.frombuffer(data, dtype=np.uint8)


_Field = Union[_Fixed, _Variable]


def _rows(fields: list[_Field], start: int, stop: int) -> Iterator[Chunk]:
    """Rows ``start`` to ``stop`` (split in halves while their padded matrix is too large)."""
    count = stop - start
    widths = [field.widths(start, stop) for field in fields]
    spans = [field.width(start, stop) for field in fields]
    if count > 1 and count * (2 + sum(spans)) > CHUNK_BYTES:
        middle = start + count // 2
        yield from _rows(fields, start, middle)
        yield from _rows(fields, middle, stop)
        return
    matrix = np.empty((count, 2 + sum(spans)), dtype=np.uint8)
    matrix[:, :2] = np.frombuffer(len(fields).to_bytes(2, "big"), dtype=np.uint8)
    keep = [] if all(width is None for width in widths) else [np.ones((count, 2), dtype=bool)]
    offset = 2
    for field, width, span in zip(fields, widths, spans):
        field.fill(matrix[:, offset:offset + span], start, stop, width)
        if keep:
            keep.append(np.ones((count, span), dtype=bool) if width is None else np.arange(span) < width[:, None])
        offset += span
    yield matrix[np.hstack(keep)] if keep else matrix


def _integers(values: pd.Series, size: int) -> _Field:
    """An integer column (int64, or object/float with missing values) as ``size``-byte numbers."""
    if values.dtype.kind in "iu":
        return _Fixed(values.to_numpy(dtype="int64"), None, size)
    null = values.isna().to_numpy(dtype=bool)
    filled = values.where(~null, 0) if null.any() else values
    return _Fixed(filled.to_numpy(dtype="int64"), null if null.any() else None, size)


def _timestamps(values: pd.Series) -> _Field:
    """int64 Unix microseconds (the cleaner's dates) or ``datetime64``, as microseconds from 2000."""
    if values.dtype.kind in "iu":
        return _Fixed(values.to_numpy(dtype="int64") - _PG_EPOCH_MICROS, None, 8)
    if values.dtype.kind == "M":
        stamps = values.to_numpy()
        null = np.isnat(stamps)
        micros = np.where(null, 0, stamps.astype("datetime64[us]").view("int64") - _PG_EPOCH_MICROS)
        return _Fixed(micros, null if null.any() else None, 8)
    raise TypeError(f"a timestamp column must be int64 microseconds or datetime64, not {values.dtype}")


def _distinct(values: pd.Series, encode: Callable[[Any], Optional[bytes]]) -> _Field:
    """Each distinct value encoded once (factorized as numpy: pandas 1.4 would turn distinct tuples
    into a MultiIndex, and warn about an all-empty object column)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will not infer numeric dtypes.*", category=FutureWarning)
        codes, uniques = pd.factorize(values.to_numpy(dtype=object))
    return _Variable(codes, [encode(value) for value in uniques])


def _text(value: Any) -> Optional[bytes]:
    """Text as UTF-8; empty text is NULL; anything else is a bug upstream."""
    if not isinstance(value, str):
        raise TypeError(f"a text column holds a {type(value).__name__}")
    return value.encode("utf-8") or None


def _jsonb(value: Any) -> bytes:
    """jsonb: format version 1, then the JSON text (a str, or anything json.dumps takes)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return b"\x01" + text.encode("utf-8")


def _text_array(value: Any) -> bytes:
    """text[] from a tuple of str: one dimension, no NULL element, lower bound 1."""
    if not isinstance(value, tuple):
        raise TypeError(f"a text[] column holds a {type(value).__name__}, not a tuple of str")
    items = [item.encode("utf-8") for item in value]
    if not items:
        return (0).to_bytes(4, "big") * 2 + _TEXT_OID.to_bytes(4, "big")
    head = b"".join(number.to_bytes(4, "big") for number in (1, 0, _TEXT_OID, len(items), 1))
    return head + b"".join(len(item).to_bytes(4, "big") + item for item in items)


_ENCODERS: dict[str, Callable[[pd.Series], _Field]] = {
    "bigint": lambda values: _integers(values, 8),
    "integer": lambda values: _integers(values, 4),
    "timestamp": _timestamps,
    "text": lambda values: _distinct(values, _text),
    "jsonb": lambda values: _distinct(values, _jsonb),
    "text[]": lambda values: _distinct(values, _text_array),
}
