"""The file ingest's pipeline: batch sizes, and the parsing process running ahead of the writer.

``tagwarden ingest`` parses a file in a forked process and writes in this one
(``recommender/collector/pipeline.py``). These tests drive that pipeline directly, with real
files and a real forked parser, where the command-line tests (``test_ingest_cli.py``) only see
its end.
"""

from __future__ import annotations

import gzip
import multiprocessing
import os
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from recommender.collector import distribution, pipeline
from recommender.usage import Classifier

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _write(path: Path, events: int, *, per_line: int = 10, pad: int = 0) -> None:
    """``events`` pull events, ``per_line`` to an envelope; ``pad`` lengthens each user agent."""
    lines = []
    for start in range(0, events, per_line):
        lines.append(orjson.dumps({"events": [{
            "id": f"ev-{i}", "timestamp": f"2026-03-01T10:{i // 60 % 60:02d}:{i % 60:02d}.5Z",
            "action": "pull",
            "target": {"mediaType": MANIFEST, "digest": "sha256:" + f"{i % 7:x}" * 64,
                       "size": 500, "repository": f"team/app-{i % 13}"},
            "request": {"method": "GET", "addr": f"10.0.{i % 200}.1:4000",
                        "useragent": "containerd/1.7 " + "x" * pad},
        } for i in range(start, min(start + per_line, events))]}))
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def _sizes(files: list[str], batch_size: int) -> list[int]:
    return [len(m.events) for m in pipeline._read(
        files, batch_size, distribution.parse_envelope_line, Classifier())
        if isinstance(m, pipeline.Batch)]


def test_batches_start_small_and_so_do_the_last_ones(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "_FIRST_BATCH", 10)
    path = tmp_path / "a.jsonl"
    _write(path, 3000, per_line=3)
    sizes = _sizes([str(path)], 80)
    assert sum(sizes) == 3000
    assert sizes[:5] == [12, 21, 42, 81, 81]  # doubling up to the batch size (3 per line)
    tail = sizes[sizes.index(21, 2):]  # a quarter of it, once two batches or fewer are left
    kinds = [len(m.events) if isinstance(m, pipeline.Batch) else type(m).__name__
             for m in pipeline._read([str(path)], 80, distribution.parse_envelope_line,
                                     Classifier())]
    assert kinds.count("Flush") == 1  # commit what came before the last batches, once
    assert [k for k in kinds[kinds.index("Flush") + 1:] if k != "Progress"] == [*tail, "Done"]
    assert len(tail) >= 4 and set(tail[:-1]) == {21} and tail[-1] <= 21
    assert 160 - 81 < sum(tail) <= 160
    assert set(sizes[3:len(sizes) - len(tail)]) == {81}
    # Several files: only the last one's end makes batches small.
    two = _sizes([str(path), str(path)], 80)
    assert sum(two) == 6000 and two[:5] == [12, 21, 42, 81, 81]
    assert 6000 - 160 <= sum(two[:two.index(21, 2)]) < 6000 - 160 + 81
    # A .gz file is read from disk a MiB at a time: a small one is at its end at once.
    small = tmp_path / "b.jsonl.gz"
    _write(small, 3000, per_line=3)
    assert _sizes([str(small)], 80)[:4] == [12, 21, 21, 21]
    # A batch size under the first batch's: every batch has it.
    assert set(_sizes([str(path)], 6)) == {6}


def _children_done(timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while multiprocessing.active_children():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _elsewhere(path: Path, batch_size: int) -> Any:
    return pipeline._parsed_elsewhere([str(path)], batch_size, distribution.parse_envelope_line,
                                    Classifier(), True, lambda: T0)


def test_the_parser_runs_ahead_of_a_busy_writer(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Four 1,000-event batches, each far larger than the pipe's kernel buffer: the parser only
    # finishes while nothing takes its messages if the writing side drains the pipe for it.
    path = tmp_path / "a.jsonl.gz"
    _write(path, 4000)
    assert pipeline._AHEAD >= 4
    monkeypatch.setattr(pipeline, "_TAIL_SHARE", 1)  # four full batches, the last ones too
    with _elsewhere(path, 1000) as messages:
        first = next(messages)
        assert isinstance(first, pipeline.Prepared) and first.events.received == 1000
        assert _children_done(30), "the parser waited for the writer"
        rest = list(messages)
    # A small .gz file is fetched from disk at once: the end is near from the first batch on.
    assert [type(m).__name__ for m in rest] == ["Flush"] + ["Prepared"] * 3 + ["Progress",
                                                                                "Done"]
    received = [first.events.received] + [m.events.received for m in rest
                                          if isinstance(m, pipeline.Prepared)]
    assert received == [1000] * 4


def test_a_writer_that_stops_early_ends_the_parser_and_the_drain(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    _write(path, 60_000)
    started = time.monotonic()
    with _elsewhere(path, 1000) as messages:
        next(messages)  # then the writer fails: the parser is far from done
    assert time.monotonic() - started < 20
    assert _children_done(5)
    assert not [t for t in threading.enumerate() if t.name == "tagwarden-ingest-pipe"]


def test_a_parser_that_dies_is_an_error_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    _write(path, 60_000)
    with _elsewhere(path, 1000) as messages, \
            pytest.raises(RuntimeError, match=r"ended without finishing \(exit code -9\)"):
        next(messages)
        for child in multiprocessing.active_children():
            os.kill(child.pid or 0, signal.SIGKILL)
        for _ in messages:
            pass
    assert not [t for t in threading.enumerate() if t.name == "tagwarden-ingest-pipe"]
