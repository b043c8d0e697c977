"""Crash-safe, versioned checkpoints of decoder state (weights and adaptation statistics).

A checkpoint file ``{prefix}-{seq:08d}.ckpt`` is::

    b"BCICKPT\\n" | header length (uint64 LE) | header (JSON) | payload (numpy .npz)

The header holds the format version, sequence number, absolute sample index, a
``known_good`` flag, free metadata and a SHA-256 over the header (without the digest)
and the payload, so a truncated or corrupted file is detected. Files are written to a
temporary name, flushed, ``fsync``-ed, renamed into place and the folder is
``fsync``-ed: a crash leaves either the old set of files or the new one. The last
``keep_last`` files are kept (and always the newest known-good one).

:class:`DecoderCheckpointer` saves at a configured interval of *sample time* (never
wall-clock time) and on shutdown, restores on start (newest readable file, with a
logged warning for each unreadable one), and :meth:`DecoderCheckpointer.rollback`
restores the newest known-good state in one call.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from bci.errors import CheckpointError
from bci.schema import StrictModel

log = logging.getLogger(__name__)

MAGIC = b"BCICKPT\n"
FORMAT_VERSION = 1
_NAME = re.compile(r"^(?P<prefix>.+)-(?P<seq>\d{8})\.ckpt$")


class CheckpointParams(StrictModel):
    """Where and how often decoder state is checkpointed."""

    directory: Path = Field(Path("checkpoints"), description="relative to the config file")
    interval_s: float = Field(60.0, gt=0, description="sample time between checkpoints, s")
    keep_last: int = Field(5, ge=1, le=1000)
    prefix: str = Field("decoder", pattern=r"^[A-Za-z0-9_\-]+$")

    @field_validator("directory", mode="after")
    @classmethod
    def _relative_to_config(cls, value: Path, info: ValidationInfo) -> Path:
        ctx = info.context
        value = value.expanduser()
        if not value.is_absolute() and isinstance(ctx, dict) and "base_dir" in ctx:
            value = Path(ctx["base_dir"]) / value
        return value


class Stateful(Protocol):
    """Anything whose state is a flat dict of arrays."""

    def state_dict(self) -> dict[str, np.ndarray]: ...

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None: ...


class StateBundle:
    """Several stateful parts saved as one state (keys prefixed ``name/``)."""

    def __init__(self, **parts: Stateful) -> None:
        self.parts = parts

    def state_dict(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, part in self.parts.items():
            out.update({f"{name}/{k}": v for k, v in part.state_dict().items()})
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for name, part in self.parts.items():
            pre = f"{name}/"
            part.load_state_dict({k[len(pre) :]: v for k, v in state.items() if k.startswith(pre)})


@dataclass(frozen=True)
class Checkpoint:
    """One verified checkpoint read back from disk."""

    path: Path
    seq: int
    sample: int
    known_good: bool
    state: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


def _digest(header: dict[str, Any], payload: bytes) -> str:
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    h.update(payload)
    return h.hexdigest()


def encode(
    state: dict[str, np.ndarray], seq: int, sample: int, known_good: bool, meta: dict[str, Any]
) -> bytes:
    """The bytes of a checkpoint file."""
    buf = io.BytesIO()
    arrays: dict[str, Any] = {k: np.asarray(v) for k, v in state.items()}
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    header: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "seq": int(seq),
        "sample": int(sample),
        "known_good": bool(known_good),
        "payload_bytes": len(payload),
        "meta": meta,
    }
    header["sha256"] = _digest(header, payload)
    head = json.dumps(header, sort_keys=True).encode()
    return MAGIC + struct.pack("<Q", len(head)) + head + payload


def decode(data: bytes, path: Path) -> Checkpoint:
    """Verify and parse checkpoint bytes; raise :class:`CheckpointError` if unusable."""
    if len(data) < len(MAGIC) + 8 or not data.startswith(MAGIC):
        raise CheckpointError("not a checkpoint file (bad magic or too short)", path=str(path))
    (head_len,) = struct.unpack_from("<Q", data, len(MAGIC))
    start = len(MAGIC) + 8
    if start + head_len > len(data):
        raise CheckpointError("truncated checkpoint header", path=str(path))
    try:
        header = json.loads(data[start : start + head_len])
        digest = header.pop("sha256")
        n_payload = int(header["payload_bytes"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError("unreadable checkpoint header", path=str(path)) from exc
    if header.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            "unsupported checkpoint format", path=str(path), format=header.get("format")
        )
    payload = data[start + head_len :]
    if len(payload) != n_payload:
        raise CheckpointError(
            "truncated checkpoint payload", path=str(path), expected=n_payload, got=len(payload)
        )
    if _digest(header, payload) != digest:
        raise CheckpointError("checkpoint checksum mismatch (corrupt file)", path=str(path))
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            state = {k: npz[k] for k in npz.files}
    except (ValueError, OSError) as exc:
        raise CheckpointError("unreadable checkpoint payload", path=str(path)) from exc
    return Checkpoint(
        path=path,
        seq=int(header["seq"]),
        sample=int(header["sample"]),
        known_good=bool(header["known_good"]),
        state=state,
        meta=dict(header.get("meta") or {}),
    )


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointStore:
    """A folder of numbered checkpoint files with atomic writes and verified reads."""

    def __init__(self, directory: str | Path, keep_last: int = 5, prefix: str = "decoder") -> None:
        self.directory = Path(directory)
        self.keep_last = int(keep_last)
        self.prefix = prefix

    def paths(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.iterdir():
            m = _NAME.match(p.name)
            if m and m["prefix"] == self.prefix:
                found.append((int(m["seq"]), p))
        return [p for _, p in sorted(found)]

    def _next_seq(self) -> int:
        paths = self.paths()
        if not paths:
            return 1
        m = _NAME.match(paths[-1].name)
        assert m is not None
        return int(m["seq"]) + 1

    def save(
        self,
        state: dict[str, np.ndarray],
        *,
        sample: int,
        known_good: bool = True,
        meta: dict[str, Any] | None = None,
    ) -> Path:
        """Write a new checkpoint atomically; prune old ones; return its path."""
        seq = self._next_seq()
        path = self.directory / f"{self.prefix}-{seq:08d}.ckpt"
        tmp = self.directory / f".{path.name}.tmp-{os.getpid()}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            data = encode(state, seq, sample, known_good, meta or {})
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            _fsync_dir(self.directory)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CheckpointError(f"cannot write checkpoint: {exc}", path=str(path)) from exc
        self._prune()
        return path

    def read(self, path: Path) -> Checkpoint:
        """Read and verify one file."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"cannot read checkpoint: {exc}", path=str(path)) from exc
        return decode(data, path)

    def load_latest(self, *, known_good_only: bool = False) -> Checkpoint | None:
        """The newest readable checkpoint (optionally known-good); None if there is none.

        Every unreadable file met on the way is skipped with a logged warning.
        """
        for path in reversed(self.paths()):
            try:
                ckpt = self.read(path)
            except CheckpointError as exc:
                log.warning("skipping unusable checkpoint %s: %s", path.name, exc)
                continue
            if known_good_only and not ckpt.known_good:
                continue
            return ckpt
        return None

    def _prune(self) -> None:
        paths = self.paths()
        if len(paths) <= self.keep_last:
            return
        keep = set(paths[-self.keep_last :])
        for path in reversed(paths):  # the newest known-good one stays, however old
            try:
                good = self.read(path).known_good
            except CheckpointError:
                continue
            if good:
                keep.add(path)
                break
        for path in paths:
            if path not in keep:
                path.unlink(missing_ok=True)


class DecoderCheckpointer:
    """Checkpoints a stateful stage at an interval of sample time, on shutdown, and restores it.

    ``tick(sample)`` after each processed chunk saves when ``interval_s`` of samples has
    passed since the last save; ``shutdown(sample)`` saves unconditionally;
    ``restore()`` loads the newest readable checkpoint; ``rollback()`` the newest
    known-good one.
    """

    def __init__(
        self,
        target: Stateful,
        store: CheckpointStore,
        interval_s: float,
        sample_rate: float,
    ) -> None:
        self.target = target
        self.store = store
        self.interval = max(1, round(interval_s * sample_rate))
        self.last_saved_sample: int | None = None
        self.last_path: Path | None = None

    @classmethod
    def from_params(
        cls, target: Stateful, params: CheckpointParams, sample_rate: float
    ) -> DecoderCheckpointer:
        store = CheckpointStore(params.directory, params.keep_last, params.prefix)
        return cls(target, store, params.interval_s, sample_rate)

    def save(
        self, sample: int, *, known_good: bool = True, meta: dict[str, Any] | None = None
    ) -> Path:
        self.last_path = self.store.save(
            self.target.state_dict(), sample=sample, known_good=known_good, meta=meta
        )
        self.last_saved_sample = int(sample)
        return self.last_path

    def tick(self, sample: int, *, known_good: bool = True) -> Path | None:
        """Save if ``interval_s`` of samples passed since the last save (or restore)."""
        if self.last_saved_sample is None:
            self.last_saved_sample = int(sample)
            return None
        if sample - self.last_saved_sample >= self.interval:
            return self.save(sample, known_good=known_good)
        return None

    def shutdown(self, sample: int) -> Path:
        """Final checkpoint on a clean stop (none if nothing changed since the last one)."""
        if self.last_path is not None and self.last_saved_sample == sample:
            return self.last_path
        return self.save(sample)

    def restore(self) -> Checkpoint | None:
        """Load the newest readable checkpoint into the target; None when there is none."""
        ckpt = self.store.load_latest()
        if ckpt is not None:
            self._load(ckpt)
        return ckpt

    def rollback(self) -> Checkpoint:
        """Load the newest known-good checkpoint into the target."""
        ckpt = self.store.load_latest(known_good_only=True)
        if ckpt is None:
            raise CheckpointError(
                "no known-good checkpoint to roll back to", directory=str(self.store.directory)
            )
        self._load(ckpt)
        return ckpt

    def _load(self, ckpt: Checkpoint) -> None:
        try:
            self.target.load_state_dict(ckpt.state)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(
                "checkpoint does not fit this decoder", path=str(ckpt.path)
            ) from exc
        self.last_saved_sample = ckpt.sample
        log.info("restored checkpoint %s (sample %d)", ckpt.path.name, ckpt.sample)
