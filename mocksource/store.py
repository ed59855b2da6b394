"""The dataset on disk, and serving slices of it without parsing.

A dataset path (`NAME`, data/customers.jsonl by default) is a symbolic link to the data
file of its current generation, `NAME.generations/<n>/NAME`. Beside that file, in the
generation's folder:

- `NAME` (JSON Lines): one compact, already encoded JSON record per line, in serving order.
- `NAME.idx`: little-endian uint64 byte offsets where each line starts, plus one final
  entry holding the file size, so line i is `[idx[i], idx[i+1])` including its newline.
- `NAME.ids.idx`: entries of (16-byte BLAKE2b hash of the customer_id string, little-endian
  uint64 line number), sorted, for binary search. A customer_id cannot be turned back into
  its line number, and hashing the exact string also covers crafted, non-UUID ids.
- `NAME.updated.idx`: entries of (little-endian int64 updated_at in microseconds since the
  epoch, uint64 line number) in (updated_at, customer_id, line) order. A line without a
  readable updated_at (see times.py) is not in it.
- `NAME.deleted.jsonl`: the tombstones of every generation so far, one
  `{"customer_id":...,"deleted_at":...}` a line, in (deleted_at, customer_id) order.
- `NAME.deleted.idx`: (int64 deleted_at in microseconds, uint64 byte offset) of every
  tombstone line, plus a final entry whose offset is the tombstone file's size.
- `NAME.meta.json`: `{"next_index": N}`, the first record index no customer_id was ever
  made from, so that the next generation's new ids are fresh.

A generation is written in a new folder and then the link is replaced by a rename, so a
reader resolving the link opens one whole generation, never a mix. The server maps the
files with mmap, so its memory does not grow with the dataset.
"""

import bisect
import hashlib
import json
import mmap
import os
import shutil
import struct
import sys
import tempfile
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import times

INDEX_SUFFIX = ".idx"
IDS_SUFFIX = ".ids.idx"
UPDATED_SUFFIX = ".updated.idx"
DELETED_SUFFIX = ".deleted.jsonl"
DELETED_INDEX_SUFFIX = ".deleted.idx"
META_SUFFIX = ".meta.json"
GENERATIONS_SUFFIX = ".generations"
_OFFSET = struct.Struct("<Q")
_ID_ENTRY = struct.Struct("<16sQ")
_TIME_ENTRY = struct.Struct("<qQ")


class DatasetError(Exception):
    """The dataset files are missing or do not belong together."""


@dataclass(frozen=True)
class Line:
    """A record as the writer takes it: encoded, with the two fields its indexes need."""

    customer_id: object
    updated_at: object
    encoded: bytes


def id_key(customer_id: str) -> bytes:
    return hashlib.blake2b(customer_id.encode(), digest_size=16).digest()


def index_path(path: Path) -> Path:
    return _beside(_data_file(path), INDEX_SUFFIX)


def ids_path(path: Path) -> Path:
    return _beside(_data_file(path), IDS_SUFFIX)


def generations_path(path: Path) -> Path:
    return _beside(Path(path), GENERATIONS_SUFFIX)


def write(
    lines: Iterable[Line], path: Path, *, tombstones: Iterable[tuple[str, str]] = (), next_index: int | None = None
) -> int:
    """Write a new generation of the dataset at `path` and make it current; return its line count.

    `tombstones` are (customer_id, deleted_at) pairs; `next_index` defaults to the line count.
    """
    path = Path(path)
    generations = generations_path(path)
    generations.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".new-", dir=generations))
    try:
        # mkdtemp makes it private; the server may run as another user than the generator.
        folder.chmod(0o755)
        count = _write_generation(lines, folder / path.name, tombstones, next_index)
        current = generations / str(_next_number(generations))
        os.rename(folder, current)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    previous = _point(path, current / path.name)
    # A server that has not yet noticed the swap still opens the previous generation's files
    # between two requests; anything older is no longer current for anyone.
    for old in generations.iterdir():
        if old.name.isdigit() and old not in {current, previous}:
            shutil.rmtree(old, ignore_errors=True)
    return count


def _write_generation(
    lines: Iterable[Line], data_path: Path, tombstones: Iterable[tuple[str, str]], next_index: int | None
) -> int:
    offsets, keys, changes = _write_lines(lines, data_path)
    _write_offsets(offsets, _beside(data_path, INDEX_SUFFIX))
    keys.sort()
    with _beside(data_path, IDS_SUFFIX).open("wb") as ids_file:
        ids_file.writelines(_ID_ENTRY.pack(key, number) for key, number in keys)
    changes.sort()
    with _beside(data_path, UPDATED_SUFFIX).open("wb") as updated_file:
        updated_file.writelines(_TIME_ENTRY.pack(moment, number) for moment, _, number in changes)
    _write_tombstones(tombstones, data_path)
    count = len(offsets) - 1
    meta = {"next_index": count if next_index is None else next_index}
    _beside(data_path, META_SUFFIX).write_text(json.dumps(meta) + "\n")
    return count


def _write_lines(lines: Iterable[Line], path: Path) -> tuple[array, list, list]:
    offsets = array("Q", [0])
    keys, changes = [], []
    with path.open("wb", buffering=1024 * 1024) as data_file:
        position = 0
        for number, line in enumerate(lines):
            data_file.write(line.encoded)
            data_file.write(b"\n")
            position += len(line.encoded) + 1
            offsets.append(position)
            customer_id = line.customer_id if isinstance(line.customer_id, str) else None
            if customer_id is not None:
                keys.append((id_key(customer_id), number))
            if (moment := times.parse(line.updated_at)) is not None:
                changes.append((moment, customer_id or "", number))
    return offsets, keys, changes


def _write_tombstones(tombstones: Iterable[tuple[str, str]], data_path: Path) -> None:
    entries = []
    for customer_id, deleted_at in tombstones:
        if (moment := times.parse(deleted_at)) is None:
            raise ValueError(f"The tombstone of {customer_id!r} has no readable deleted_at: {deleted_at!r}.")
        entries.append((moment, customer_id, deleted_at))
    entries.sort()
    index = array("q")
    position = 0
    with _beside(data_path, DELETED_SUFFIX).open("wb") as deleted_file:
        for moment, customer_id, deleted_at in entries:
            line = json.dumps({"customer_id": customer_id, "deleted_at": deleted_at}, separators=(",", ":")).encode()
            index.extend((moment, position))
            deleted_file.write(line + b"\n")
            position += len(line) + 1
    index.extend((0, position))
    _write_offsets(index, _beside(data_path, DELETED_INDEX_SUFFIX))


def _write_offsets(numbers: array, path: Path) -> None:
    if sys.byteorder == "big":
        numbers.byteswap()
    path.write_bytes(numbers.tobytes())


def _next_number(generations: Path) -> int:
    return 1 + max((int(entry.name) for entry in generations.iterdir() if entry.name.isdigit()), default=0)


def _point(path: Path, data_file: Path) -> Path | None:
    """Make `path` a link to `data_file` in one rename; return the generation it named before."""
    was_file = path.is_file() and not path.is_symlink()
    previous = Path(os.path.realpath(path)).parent if path.is_symlink() else None
    link = path.with_name(f".{path.name}.{os.getpid()}.link")
    link.unlink(missing_ok=True)
    os.symlink(os.path.relpath(data_file, path.parent), link)
    os.replace(link, path)
    if was_file:
        # A dataset from before generations: its index files lay beside it.
        for suffix in (INDEX_SUFFIX, IDS_SUFFIX):
            _beside(path, suffix).unlink(missing_ok=True)
    return previous


class Store:
    """Read-only view of one generation: page slices, lookups by customer_id, changes and tombstones."""

    def __init__(self, path: Path):
        self.path = Path(path)
        # Resolved once: every file below comes from the same generation even if the link moves.
        data_file = _data_file(self.path)
        try:
            self._data, self._identity = _map(data_file)
            self._index = _map(_beside(data_file, INDEX_SUFFIX))[0]
            self._ids = _map(_beside(data_file, IDS_SUFFIX))[0]
            self._updated = _map(_beside(data_file, UPDATED_SUFFIX))[0]
            self._deleted = _map(_beside(data_file, DELETED_SUFFIX))[0]
            self._deleted_index = _map(_beside(data_file, DELETED_INDEX_SUFFIX))[0]
            self.next_index = json.loads(_beside(data_file, META_SUFFIX).read_bytes())["next_index"]
        except FileNotFoundError as exc:
            raise DatasetError(
                f"Dataset file {Path(exc.filename).name} is missing; "
                "create the dataset with `python manage.py generate_customers`."
            ) from None
        self.total = len(self._index) // _OFFSET.size - 1
        if self.total < 0 or self._offset(self.total) != len(self._data):
            raise DatasetError(f"{data_file.name}{INDEX_SUFFIX} does not match {data_file.name}; generate it again.")
        self._id_count = len(self._ids) // _ID_ENTRY.size
        self._updated_count = len(self._updated) // _TIME_ENTRY.size
        self._deleted_count = len(self._deleted_index) // _TIME_ENTRY.size - 1
        if self._deleted_count < 0 or self._tombstone_offset(self._deleted_count) != len(self._deleted):
            raise DatasetError(f"The tombstones of {data_file.name} do not match their index; generate it again.")

    def replaced(self) -> bool:
        """Whether the path now names another generation than this one (one stat, no reading)."""
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return False  # nothing newer to open; this generation stays served
        # Safe against inode reuse: this store's mapping keeps its own inode allocated.
        return (status.st_dev, status.st_ino) != self._identity

    def page(self, start: int, stop: int) -> bytes:
        """Records [start, stop) as the inside of a JSON array: lines joined by commas."""
        start, stop = min(start, self.total), min(stop, self.total)
        if start >= stop:
            return b""
        # Encoded JSON never holds a raw newline, so the only ones are line ends.
        return self._data[self._offset(start) : self._offset(stop) - 1].replace(b"\n", b",")

    def updated_page(self, since: int, start: int, stop: int) -> tuple[bytes, int]:
        """Records [start, stop) of those with updated_at >= `since` (microseconds) in change order, and their count."""
        first = bisect.bisect_left(_Times(self._updated, self._updated_count), since)
        numbers = range(first + start, min(first + stop, self._updated_count))
        lines = (self.line(_TIME_ENTRY.unpack_from(self._updated, at * _TIME_ENTRY.size)[1]) for at in numbers)
        return b",".join(lines), self._updated_count - first

    def deleted_page(self, since: int | None, start: int, stop: int) -> tuple[bytes, int]:
        """Tombstones [start, stop) of those deleted at or after `since` (all when None), and their count."""
        first = 0 if since is None else bisect.bisect_left(_Times(self._deleted_index, self._deleted_count), since)
        start, stop = min(first + start, self._deleted_count), min(first + stop, self._deleted_count)
        if start >= stop:
            return b"", self._deleted_count - first
        lines = self._deleted[self._tombstone_offset(start) : self._tombstone_offset(stop) - 1]
        return lines.replace(b"\n", b","), self._deleted_count - first

    def line(self, number: int) -> bytes:
        """Line `number` without its newline."""
        return self._data[self._offset(number) : self._offset(number + 1) - 1]

    def tombstones(self) -> Iterator[bytes]:
        """Every tombstone line, in order."""
        return iter(self._deleted[: len(self._deleted) - 1].splitlines()) if self._deleted_count else iter(())

    def latest_change(self) -> int | None:
        """The latest updated_at or deleted_at in this generation (microseconds), if any."""
        moments = []
        if self._updated_count:
            moments.append(_Times(self._updated, self._updated_count)[self._updated_count - 1])
        if self._deleted_count:
            moments.append(_Times(self._deleted_index, self._deleted_count)[self._deleted_count - 1])
        return max(moments, default=None)

    def find(self, customer_id: str) -> bytes | None:
        """The first line whose customer_id is exactly `customer_id`, or None."""
        key = id_key(customer_id)
        position = bisect.bisect_left(_IdKeys(self._ids, self._id_count), key)
        while position < self._id_count:
            entry_key, number = _ID_ENTRY.unpack_from(self._ids, position * _ID_ENTRY.size)
            if entry_key != key:
                return None
            line = self.line(number)
            # Confirm the hash match; a crafted line need not even be valid JSON.
            try:
                if json.loads(line).get("customer_id") == customer_id:
                    return line
            except (ValueError, AttributeError):
                pass
            position += 1
        return None

    def close(self) -> None:
        for mapped in (self._data, self._index, self._ids, self._updated, self._deleted, self._deleted_index):
            if isinstance(mapped, mmap.mmap):
                mapped.close()

    def _offset(self, number: int) -> int:
        return _OFFSET.unpack_from(self._index, number * _OFFSET.size)[0]

    def _tombstone_offset(self, number: int) -> int:
        return _TIME_ENTRY.unpack_from(self._deleted_index, number * _TIME_ENTRY.size)[1]


class _IdKeys:
    """The hash column of the id index as a sequence, for `bisect`."""

    def __init__(self, ids, count: int):
        self._ids, self._count = ids, count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, position: int) -> bytes:
        start = position * _ID_ENTRY.size
        return self._ids[start : start + 16]


class _Times:
    """The time column of a time index as a sequence, for `bisect`."""

    def __init__(self, entries, count: int):
        self._entries, self._count = entries, count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, position: int) -> int:
        return _TIME_ENTRY.unpack_from(self._entries, position * _TIME_ENTRY.size)[0]


def _data_file(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _map(path: Path) -> tuple[mmap.mmap | bytes, tuple[int, int]]:
    with path.open("rb") as file:
        status = os.fstat(file.fileno())
        identity = (status.st_dev, status.st_ino)
        if status.st_size == 0:
            return b"", identity  # mmap refuses empty files
        return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ), identity
