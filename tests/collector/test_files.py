"""Streaming JSON lines: plain, gzip (by suffix or magic), stdin, bad and overlong lines."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from recommender.collector.files import JsonLines
from recommender.errors import PayloadError

BODY = b'{"a": 1}\n\n  \nnot json\n[1, 2]\n{"b": "\xc3\xa9"}'  # no final newline


def items(lines: JsonLines) -> list[tuple[int, object]]:
    return [(n, o.message if isinstance(o, PayloadError) else o) for n, o in lines]


EXPECTED = [(1, {"a": 1}), (4, "line 4: invalid JSON: "), (5, [1, 2]), (6, {"b": "é"})]


def check(got: list[tuple[int, object]]) -> None:
    assert [n for n, _ in got] == [n for n, _ in EXPECTED]
    for (_, g), (_, e) in zip(got, EXPECTED, strict=True):
        assert g == e or (isinstance(g, str) and isinstance(e, str) and g.startswith(e))


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz", "gzipped-no-suffix"])
def test_plain_and_gzip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(BODY if name.endswith(".jsonl") else gzip.compress(BODY))
    with JsonLines(path) as lines:
        check(items(lines))
        assert lines.bytes_read == lines.total_bytes == path.stat().st_size


def test_stdin() -> None:
    with JsonLines("-", stdin=io.BytesIO(gzip.compress(BODY))) as lines:
        check(items(lines))
        assert lines.total_bytes is None


def test_an_overlong_line_is_skipped_not_held(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    path.write_bytes(b'{"a": 1}\n"' + b"x" * 5000 + b'"\n{"c": 3}\n')
    with JsonLines(path, max_line_bytes=1000) as lines:
        got = items(lines)
    assert got[0] == (1, {"a": 1}) and got[2] == (3, {"c": 3})
    assert got[1] == (2, "line 2: longer than 1000 bytes")


def test_a_truncated_gzip_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl.gz"
    data = gzip.compress(b'{"a": 1}\n' * 10000)
    path.write_bytes(data[: len(data) // 2])
    with JsonLines(path) as lines:
        got = items(lines)
    assert got[-1][1].startswith(f"line {got[-1][0]}: cannot read")  # type: ignore[union-attr]
    assert all(o == {"a": 1} for _, o in got[:-1])


def test_a_corrupt_gzip_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl.gz"
    data = bytearray(gzip.compress(b'{"a": 1}\n' * 10000))
    data[20:200] = bytes((b * 7 + 3) % 256 for b in data[20:200])  # deflate blocks garbled
    path.write_bytes(bytes(data))
    with JsonLines(path) as lines:
        got = items(lines)
    assert got[-1][1].startswith(f"line {got[-1][0]}: cannot read")  # type: ignore[union-attr]


def test_a_missing_file_is_a_payload_error(tmp_path: Path) -> None:
    with pytest.raises(PayloadError, match="cannot read .*nope.jsonl"):
        JsonLines(tmp_path / "nope.jsonl")
