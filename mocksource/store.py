"""The dataset on disk, and serving slices of it without parsing.

Three files side by side:

- `NAME` (JSON Lines): one compact, already encoded JSON record per line, in serving order.
- `NAME.idx`: little-endian uint64 byte offsets where each line starts, plus one final
  entry holding the file size, so line i is `[idx[i], idx[i+1])` including its newline.
- `NAME.ids.idx`: entries of (16-byte BLAKE2b hash of the customer_id string, little-endian
  uint64 line number), sorted, for binary search. A customer_id cannot be turned back into
  its line number, and hashing the exact string also covers crafted, non-UUID ids.

The server maps all three with mmap, so its memory does not grow with the dataset.
"""

import bisect
import hashlib
import json
import mmap
import os
import struct
import sys
from array import array
from collections.abc import Iterable
from pathlib import Path

INDEX_SUFFIX = ".idx"
IDS_SUFFIX = ".ids.idx"  # ends in .idx so that the ignore rules for data/ cover it
_OFFSET = struct.Struct("<Q")
_ID_ENTRY = struct.Struct("<16sQ")


class DatasetError(Exception):
    """The dataset files are missing or do not belong together."""


def id_key(customer_id: str) -> bytes:
    return hashlib.blake2b(customer_id.encode(), digest_size=16).digest()


def index_path(path: Path) -> Path:
    return path.with_name(path.name + INDEX_SUFFIX)


def ids_path(path: Path) -> Path:
    return path.with_name(path.name + IDS_SUFFIX)


def write(lines: Iterable[tuple[str | None, bytes]], path: Path) -> int:
    """Write (customer_id, encoded record) pairs as the three files; return the line count.

    Each file goes to a temporary name first and is renamed into place; the data file is
    renamed last, and `Store` refuses an index that does not match it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    targets = [path, index_path(path), ids_path(path)]
    temporary = [target.with_name(f".{target.name}.{os.getpid()}.tmp") for target in targets]
    try:
        offsets, keys = _write_lines(lines, temporary[0])
        if sys.byteorder == "big":
            offsets.byteswap()
        temporary[1].write_bytes(offsets.tobytes())
        keys.sort()
        with temporary[2].open("wb") as ids_file:
            ids_file.writelines(_ID_ENTRY.pack(key, number) for key, number in keys)
        for source, target in reversed(list(zip(temporary, targets, strict=True))):
            os.replace(source, target)
    finally:
        for leftover in temporary:
            leftover.unlink(missing_ok=True)
    return len(offsets) - 1


def _write_lines(lines: Iterable[tuple[str | None, bytes]], path: Path) -> tuple[array, list[tuple[bytes, int]]]:
    offsets = array("Q", [0])
    keys = []
    with path.open("wb", buffering=1024 * 1024) as data_file:
        position = 0
        for number, (customer_id, line) in enumerate(lines):
            data_file.write(line)
            data_file.write(b"\n")
            position += len(line) + 1
            offsets.append(position)
            if isinstance(customer_id, str):
                keys.append((id_key(customer_id), number))
    return offsets, keys


class Store:
    """Read-only view of a written dataset: page slices and lookups by customer_id."""

    def __init__(self, path: Path):
        path = Path(path)
        try:
            self._data = _map(path)
            self._index = _map(index_path(path))
            self._ids = _map(ids_path(path))
        except FileNotFoundError as exc:
            raise DatasetError(
                f"Dataset file {exc.filename} is missing; create it with `python manage.py generate_customers`."
            ) from None
        self.total = len(self._index) // _OFFSET.size - 1
        if self.total < 0 or self._offset(self.total) != len(self._data):
            raise DatasetError(f"{index_path(path).name} does not match {path.name}; generate the dataset again.")
        self._id_count = len(self._ids) // _ID_ENTRY.size

    def page(self, start: int, stop: int) -> bytes:
        """Records [start, stop) as the inside of a JSON array: lines joined by commas."""
        start, stop = min(start, self.total), min(stop, self.total)
        if start >= stop:
            return b""
        # Encoded JSON never holds a raw newline, so the only ones are line ends.
        return self._data[self._offset(start) : self._offset(stop) - 1].replace(b"\n", b",")

    def find(self, customer_id: str) -> bytes | None:
        """The first line whose customer_id is exactly `customer_id`, or None."""
        key = id_key(customer_id)
        position = bisect.bisect_left(_IdKeys(self._ids, self._id_count), key)
        while position < self._id_count:
            entry_key, number = _ID_ENTRY.unpack_from(self._ids, position * _ID_ENTRY.size)
            if entry_key != key:
                return None
            line = self._data[self._offset(number) : self._offset(number + 1) - 1]
            # Confirm the hash match; a crafted line need not even be valid JSON.
            try:
                if json.loads(line).get("customer_id") == customer_id:
                    return line
            except (ValueError, AttributeError):
                pass
            position += 1
        return None

    def close(self) -> None:
        for mapped in (self._data, self._index, self._ids):
            if isinstance(mapped, mmap.mmap):
                mapped.close()

    def _offset(self, number: int) -> int:
        return _OFFSET.unpack_from(self._index, number * _OFFSET.size)[0]


class _IdKeys:
    """The hash column of the id index as a sequence, for `bisect`."""

    def __init__(self, ids, count: int):
        self._ids, self._count = ids, count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, position: int) -> bytes:
        start = position * _ID_ENTRY.size
        return self._ids[start : start + 16]


def _map(path: Path) -> mmap.mmap | bytes:
    with path.open("rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            return b""  # mmap refuses empty files
        return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
