"""Append-only data files with a checksummed block index.

A data file only grows. Each flush appends one *block* of bytes, ``fsync``-s the data
file, then appends one JSON line to the index file (``offset``, ``nbytes``, ``crc32``
and free metadata) and ``fsync``-s the index. The index therefore never names bytes
that are not on disk: after a crash (even ``SIGKILL`` mid-write) the data up to the
last indexed block are intact, and anything after it is an *unverified tail* that
:func:`scan_blocks` reports and never returns as data. :func:`truncate_to` cuts a
file back to its verified part.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Verify = Literal["none", "tail", "all"]
#: Anything with the buffer protocol (C-contiguous): bytes, memoryview, ndarray.
BufferLike = bytes | bytearray | memoryview | np.ndarray

#: CRC32 is computed over chunks of this many bytes when verifying large blocks.
_CRC_STEP = 1 << 24


def fsync_dir(path: Path) -> None:
    """``fsync`` a folder so a rename or new file in it survives a power loss."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some file systems do not allow opening folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: temporary file, ``fsync``, rename, ``fsync``
    of the folder. A crash leaves the old file or the new one, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


@dataclass(frozen=True, slots=True)
class Block:
    """One flushed block: ``nbytes`` bytes at ``offset`` with checksum ``crc32``."""

    offset: int
    nbytes: int
    crc32: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def end(self) -> int:
        return self.offset + self.nbytes


class BlockWriter:
    """Appends checksummed blocks to ``data_path`` and their records to ``index_path``.

    Not thread-safe: one writer thread owns it. ``fsync=False`` is for tests and
    benchmarks of the format only (it gives up the durability guarantee).
    """

    def __init__(self, data_path: Path, index_path: Path, *, fsync: bool = True) -> None:
        self.data_path = Path(data_path)
        self.index_path = Path(index_path)
        self.fsync = fsync
        new = not self.data_path.exists()
        self._data = open(self.data_path, "ab", buffering=0)  # noqa: SIM115 - kept open
        self._index = open(self.index_path, "ab", buffering=0)  # noqa: SIM115 - kept open
        if new:
            fsync_dir(self.data_path.parent)
        self.size = self._data.seek(0, os.SEEK_END)
        self.n_blocks = 0

    def append(self, data: BufferLike | Sequence[BufferLike], **meta: Any) -> Block:
        """Write ``data`` (one buffer, or several written back to back without joining
        them) as one block: data, ``fsync``, index line, ``fsync``. The CRC32 and the
        writes release the GIL on large buffers, so a real-time thread keeps running."""
        items: list[Any] = list(data) if isinstance(data, list | tuple) else [data]
        parts = [memoryview(b).cast("B") for b in items]
        crc = 0
        nbytes = 0
        for view in parts:
            crc = zlib.crc32(view, crc)
            written = 0
            while written < len(view):
                written += self._data.write(view[written:]) or 0
            nbytes += len(view)
        if self.fsync:
            os.fsync(self._data.fileno())
        block = Block(self.size, nbytes, crc, meta)
        record = {"offset": block.offset, "nbytes": block.nbytes, "crc32": block.crc32, **meta}
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        self._index.write(line)
        if self.fsync:
            os.fsync(self._index.fileno())
        self.size += block.nbytes
        self.n_blocks += 1
        return block

    def close(self) -> None:
        for f in (self._data, self._index):
            if not f.closed:
                if self.fsync:
                    os.fsync(f.fileno())
                f.close()


@dataclass
class ScanResult:
    """What :func:`scan_blocks` found.

    ``blocks`` are the verified blocks, contiguous from offset 0; ``verified_bytes`` is
    where they end; ``index_bytes`` is the length of the index's valid prefix;
    ``problems`` says in words what is wrong (torn index line, checksum mismatch,
    unverified tail), empty when the file is whole.
    """

    data_path: Path
    blocks: list[Block]
    verified_bytes: int
    file_bytes: int
    index_bytes: int
    index_file_bytes: int
    problems: list[str]

    @property
    def tail_bytes(self) -> int:
        """Bytes in the data file after the last verified block."""
        return max(0, self.file_bytes - self.verified_bytes)

    @property
    def clean(self) -> bool:
        return not self.problems


def _crc_of(path: Path, offset: int, nbytes: int) -> int:
    crc = 0
    with open(path, "rb") as f:
        f.seek(offset)
        left = nbytes
        while left > 0:
            part = f.read(min(left, _CRC_STEP))
            if not part:
                break
            crc = zlib.crc32(part, crc)
            left -= len(part)
    return crc


def scan_blocks(data_path: Path, index_path: Path, verify: Verify = "tail") -> ScanResult:
    """Read the index of ``data_path`` and check it against the data.

    ``verify``: ``"all"`` checks every block's CRC32, ``"tail"`` only the last one (the
    one a crash can tear), ``"none"`` trusts the index. Blocks from the first bad one on
    are dropped and reported.
    """
    data_path = Path(data_path)
    index_path = Path(index_path)
    problems: list[str] = []
    file_bytes = data_path.stat().st_size if data_path.exists() else 0
    raw = index_path.read_bytes() if index_path.exists() else b""
    blocks: list[Block] = []
    index_bytes = 0
    pos = 0
    expected = 0
    while pos < len(raw):
        nl = raw.find(b"\n", pos)
        if nl < 0:
            problems.append(
                f"{index_path.name}: torn last index line ({len(raw) - pos} bytes without "
                "newline), ignored"
            )
            break
        try:
            rec = json.loads(raw[pos:nl])
            block = Block(
                int(rec.pop("offset")), int(rec.pop("nbytes")), int(rec.pop("crc32")), rec
            )
        except (ValueError, KeyError, TypeError):
            problems.append(f"{index_path.name}: unreadable index line at byte {pos}, ignored")
            break
        if block.offset != expected:
            problems.append(
                f"{index_path.name}: block at offset {block.offset} does not follow the "
                f"previous one (expected {expected}); index cut there"
            )
            break
        if block.end > file_bytes:
            problems.append(
                f"{data_path.name}: indexed block at {block.offset}+{block.nbytes} lies past "
                f"the end of the file ({file_bytes} bytes); index cut there"
            )
            break
        blocks.append(block)
        expected = block.end
        pos = nl + 1
        index_bytes = pos
    if verify != "none" and blocks:
        check = range(len(blocks)) if verify == "all" else range(len(blocks) - 1, len(blocks))
        for k in check:
            b = blocks[k]
            if _crc_of(data_path, b.offset, b.nbytes) != b.crc32:
                problems.append(
                    f"{data_path.name}: checksum mismatch in block {k} (offset {b.offset}); "
                    "data from there on are not trusted"
                )
                blocks = blocks[:k]
                index_bytes = _index_prefix(raw, k)
                break
    verified = blocks[-1].end if blocks else 0
    if file_bytes > verified:
        problems.append(
            f"{data_path.name}: unverified tail of {file_bytes - verified} bytes after the "
            "last flushed block (written but never indexed), ignored"
        )
    return ScanResult(data_path, blocks, verified, file_bytes, index_bytes, len(raw), problems)


def _index_prefix(raw: bytes, n_lines: int) -> int:
    pos = 0
    for _ in range(n_lines):
        pos = raw.index(b"\n", pos) + 1
    return pos


def truncate_to(scan: ScanResult, index_path: Path) -> bool:
    """Cut the data file and its index back to their verified parts; True if changed."""
    changed = False
    if scan.file_bytes > scan.verified_bytes:
        os.truncate(scan.data_path, scan.verified_bytes)
        changed = True
    if index_path.exists() and scan.index_file_bytes > scan.index_bytes:
        os.truncate(index_path, scan.index_bytes)
        changed = True
    if changed:
        for p in (scan.data_path, index_path):
            if p.exists():
                with open(p, "rb+") as f:
                    os.fsync(f.fileno())
    return changed


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int, list[str]]:
    """Valid JSON lines of ``path``, the byte length of the valid prefix, and problems
    (a torn or unreadable line ends the valid prefix)."""
    if not path.exists():
        return [], 0, []
    raw = path.read_bytes()
    rows: list[dict[str, Any]] = []
    pos = 0
    problems: list[str] = []
    while pos < len(raw):
        nl = raw.find(b"\n", pos)
        if nl < 0:
            problems.append(f"{path.name}: torn last line ({len(raw) - pos} bytes), ignored")
            break
        try:
            row = json.loads(raw[pos:nl])
        except ValueError:
            problems.append(f"{path.name}: unreadable line at byte {pos}; the rest is ignored")
            break
        if isinstance(row, dict):
            rows.append(row)
        pos = nl + 1
    return rows, pos, problems
