"""Streaming readers for JSON lines files: ``-`` is stdin, ``.gz`` (or gzip magic) is inflated.

Memory stays constant whatever the file size: one line at a time, and a line longer than
``max_line_bytes`` is skipped (reported as an error) without being held whole.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import orjson
from isal import igzip, isal_zlib

from ..errors import PayloadError

__all__ = ["JsonLines", "decode", "decode_line", "open_input"]

_GZIP_MAGIC = b"\x1f\x8b"
# A truncated or corrupt .gz: a bad header or CRC is BadGzipFile (an OSError), a cut stream
# EOFError, a bad deflate block ISA-L's error (its stub calls the class an instance).
_UNREADABLE = (OSError, EOFError, cast(type[Exception], isal_zlib.error))
_READ_CHUNK = 1 << 20


def open_input(path: str | Path, *, stdin: IO[bytes] | None = None) -> tuple[IO[bytes], IO[bytes]]:
    """Open ``path`` for reading bytes: (decoded stream, raw stream for progress).

    Raises :class:`PayloadError` when the file cannot be opened.
    """
    if str(path) == "-":
        raw = stdin if stdin is not None else sys.stdin.buffer
    else:
        try:
            raw = open(path, "rb")  # noqa: SIM115 - the caller closes it (JsonLines.close)
        except OSError as exc:
            raise PayloadError(f"cannot read {path}: {exc.strerror}", file=str(path)) from None
    buffered: Any = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(
        raw, buffer_size=_READ_CHUNK)  # type: ignore[type-var]
    if buffered.peek(2)[:2] == _GZIP_MAGIC:
        # ISA-L's inflate (python-isal, the stdlib's GzipFile interface and errors) read a
        # large chunk at a time: about a third of the stdlib zlib's CPU (bench/).
        inflated: Any = io.BufferedReader(igzip.GzipFile(fileobj=buffered, mode="rb"),
                                          buffer_size=_READ_CHUNK)
        return inflated, raw
    return buffered, raw


class JsonLines:
    """Iterate ``(line_number, object)`` or ``(line_number, PayloadError)``; blank lines skipped.
    With ``raw``, the object is the line's bytes (errors reading the file still come as
    :class:`PayloadError`).

    ``bytes_read`` and ``total_bytes`` (None for stdin) measure progress in the file as stored
    (compressed bytes for ``.gz``).
    """

    def __init__(self, path: str | Path, *, stdin: IO[bytes] | None = None,
                 max_line_bytes: int = 16 << 20, raw: bool = False) -> None:
        self.path = str(path)
        self.max_line_bytes = max_line_bytes
        self.raw = raw  # yield each line's bytes, for a parser that decodes them itself
        self._stream, self._raw = open_input(path, stdin=stdin)
        self.total_bytes: int | None = None
        if self.path != "-":
            try:
                self.total_bytes = os.fstat(self._raw.fileno()).st_size
            except (OSError, io.UnsupportedOperation):
                self.total_bytes = None
        self.line = 0
        self.last_raw = b""  # the bytes of the last line yielded (see ``rest``)

    @property
    def bytes_read(self) -> int:
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        readline = self._stream.readline
        limit = self.max_line_bytes
        while True:
            try:
                line = readline(limit + 1)
            except _UNREADABLE as exc:
                # A truncated or corrupt .gz: report it on the next line and stop.
                self.line += 1
                yield self.line, PayloadError(f"line {self.line}: cannot read: {exc}",
                                              line=self.line)
                return
            if not line:
                return
            self.line += 1
            if len(line) > limit and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):
                    line = readline(_READ_CHUNK)
                yield self.line, PayloadError(
                    f"line {self.line}: longer than {limit} bytes", line=self.line)
                continue
            if not line.strip():
                continue
            self.last_raw = line
            yield self.line, line if self.raw else decode_line(line, self.line)

    def rest(self) -> bytes:
        """Everything not read yet: ``last_raw + rest()`` is a multi-line document."""
        return self._stream.read()

    def close(self) -> None:
        if self._raw is not sys.stdin.buffer:
            self._stream.close()
            self._raw.close()

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decode_line(line: bytes, number: int) -> Any:
    """The decoded JSON of one line, or a :class:`PayloadError` naming the line."""
    try:
        return decode(line)
    except PayloadError as exc:
        return PayloadError(f"line {number}: {exc.message}", line=number)


def decode(line: bytes) -> Any:
    """The decoded JSON of one line; :class:`PayloadError` when it is not JSON."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"invalid JSON: {exc}") from None
