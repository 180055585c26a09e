"""Atomic file writes and mlip's one container format.

Every file mlip writes goes through :func:`atomic_path` / :func:`atomic_write`:
the data go to a temporary file in the destination's folder (a unique hidden
name, ``.NAME.<hex>.tmp``, created like a normal ``open`` would, so its
permissions follow the umask), which is fsynced and moved over the destination
with :func:`os.replace`.  A reader never sees half a file, and on any error the
temporary file is removed and the old file (if any) stays as it was.

Model files, MD restart files and training checkpoints share one container
layout (:func:`write_container`, :func:`read_container`)::

    b"MLIP-MODEL\\n"                     magic line of the kind
    {"format_version": 1, "sha256": ..., "payload_bytes": ...}\\n   JSON header line
    <msgpack payload>                      a mapping (the content)

The checksum makes truncated or corrupted files fail loudly; every error names
the file.  Each kind of file is a :class:`ContainerKind`: its magic line, its
name in messages, the version it writes and the versions it reads.

This module is a low layer: it imports nothing from mlip.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgpack

__all__ = [
    "Container",
    "ContainerError",
    "ContainerKind",
    "atomic_path",
    "atomic_write",
    "read_container",
    "save_figure",
    "write_bytes_atomic",
    "write_container",
    "write_text_atomic",
]


# ----------------------------------------------------------------------------- atomic writes


def _temporary_path(path: Path) -> Path:
    """A fresh, hidden name next to ``path``: ``.NAME.<32 hex digits>.tmp``."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``path`` for something else to write (a compiler,
    a library that only takes file names); when the block ends without an error
    the file there (the block must create it) is fsynced and moved onto ``path``.
    On any error the temporary file is removed (if it exists) and ``path`` is
    left as it was.

    >>> with atomic_path("lib.so") as output:
    ...     subprocess.run(["c++", "-shared", "-o", str(output), "lib.cc"], check=True)
    """
    path = Path(path)
    temporary = _temporary_path(path)
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_options: Any) -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; when the block ends
    without an error it is fsynced and moved onto ``path`` (see :func:`atomic_path`).

    Args:
        path: the destination; its folder must exist.
        mode: ``"wb"`` (bytes) or ``"w"`` (text).
        open_options: passed to :func:`open` (``encoding``, ``newline``, ...).

    The temporary file is created with :func:`open`'s exclusive mode, so its
    permissions are ``0o666 & ~umask`` like any new file (``tempfile.mkstemp``
    would give ``0o600``).

    >>> with atomic_write("table.csv", "w", newline="") as handle:
    ...     csv.writer(handle).writerows(rows)
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_write writes a whole new file: mode must be 'w', 'wt' or 'wb', not {mode!r}")
    with atomic_path(path) as temporary:
        with open(temporary, mode.replace("w", "x"), **open_options) as handle:
            yield handle


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`); returns ``Path(path)``."""
    with atomic_write(path) as handle:
        handle.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_write`); returns ``Path(path)``."""
    with atomic_write(path, "w", encoding=encoding) as handle:
        handle.write(text)
    return Path(path)


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Save the matplotlib figure ``fig`` to ``path`` atomically.

    The suffix picks the format (``.png``, ``.pdf``, ``.svg``, ...; PNG when
    there is none); parent folders are created.  Returns ``Path(path)``.

    Raises:
        ValueError: the figure's canvas cannot write that format (nothing is written).
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"unsupported plot format {fmt!r} (from {path}); use one of {sorted(supported)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        fig.savefig(handle, format=fmt, dpi=dpi)
    return path


# ----------------------------------------------------------------------------- containers


class ContainerError(ValueError):
    """A container file is unreadable, of another kind, corrupt or of an unsupported version."""


@dataclass(frozen=True)
class ContainerKind:
    """One kind of container file.

    Attributes:
        name: what the file is called in messages, after "an": ``"mlip model"``.
        magic: the file's first line, e.g. ``b"MLIP-MODEL\\n"``.
        version: the format version written.
        readable: every version this code reads (``version`` among them).
        error: the exception raised for a bad file (a :class:`ContainerError`).
    """

    name: str
    magic: bytes
    version: int = 1
    readable: tuple[int, ...] = (1,)
    error: type[ContainerError] = ContainerError

    def __post_init__(self):
        if not self.magic.endswith(b"\n") or b"\n" in self.magic[:-1]:
            raise ValueError(f"the magic of {self.name} files must be one line ending in a newline")
        if self.version not in self.readable:
            raise ValueError(f"{self.name} files of version {self.version} are written but not readable")


@dataclass(frozen=True)
class Container:
    """What :func:`read_container` found: the file's format version and its content."""

    version: int
    content: dict


def write_container(path: str | os.PathLike, kind: ContainerKind, content: Mapping[str, Any]) -> Path:
    """Write ``content`` (msgpack-serialisable: dicts, lists, str, bytes, numbers)
    as a ``kind`` container at ``path``, atomically; returns ``Path(path)``."""
    payload = msgpack.packb(content, use_bin_type=True)
    header = {
        "format_version": kind.version,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload_bytes": len(payload),
    }
    return write_bytes_atomic(path, kind.magic + json.dumps(header).encode() + b"\n" + payload)


def read_container(path: str | os.PathLike, kind: ContainerKind) -> Container:
    """The version and content of the ``kind`` container at ``path``.

    Raises:
        kind.error: the file cannot be read, is not of this kind (bad magic bytes),
            has a corrupt header, a newer or unsupported format version, fails its
            checksum or length, or its payload is not a msgpack mapping.  The
            message names the file.
    """
    path = Path(path)
    error = kind.error
    try:
        raw = path.read_bytes()
    except OSError as problem:
        raise error(f"cannot read {kind.name} file {path}: {problem}") from problem
    if not raw.startswith(kind.magic):
        raise error(f"{path} is not an {kind.name} file (bad magic bytes)")
    header_end = raw.find(b"\n", len(kind.magic))
    try:
        header = json.loads(raw[len(kind.magic) : header_end])
        version = header["format_version"]
        if not isinstance(version, int) or isinstance(version, bool):
            raise TypeError(f"format_version {version!r} is not an integer")
        checksum, size = header["sha256"], int(header["payload_bytes"])
    except (ValueError, KeyError, TypeError) as problem:
        raise error(f"{path}: corrupt header ({problem})") from problem
    newest = max(kind.readable)
    if version > newest:
        raise error(f"{path} has format version {version}; this mlip reads up to {newest}, upgrade mlip")
    if version not in kind.readable:
        raise error(
            f"{path} has format version {version}, which no released mlip wrote and this mlip cannot read "
            f"(supported versions: {sorted(kind.readable)})"
        )
    payload = raw[header_end + 1 :]
    if len(payload) != size or hashlib.sha256(payload).hexdigest() != checksum:
        raise error(f"{path} is corrupt: checksum or length mismatch ({len(payload)} of {size} payload bytes)")
    try:
        content = msgpack.unpackb(payload, raw=False)
    except Exception as problem:  # noqa: BLE001 - whatever msgpack raises, the file is bad
        raise error(f"{path} is corrupt: cannot decode its payload ({type(problem).__name__}: {problem})") from problem
    if not isinstance(content, dict):
        raise error(f"{path} is corrupt: its payload is a {type(content).__name__}, not a mapping")
    return Container(version, content)
