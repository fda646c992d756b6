"""``tagwarden ingest`` as a user runs it: the real command line on files and stdin.

Most tests call ``main()`` in this process (a subprocess costs seconds of imports each); one
runs the console entry point as a subprocess to prove the piping and exit status for real.
"""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from recommender.cli import main
from recommender.store import open_store
from recommender.store.tables import events, k8s_snapshots, rollups, running_refs

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)

    def run(*args: str, cwd: Path, stdin: bytes | None = None) -> Done:
        capsys.readouterr()
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        code = main(["--db", f"sqlite:///{cwd / 's.db'}", *args])
        out, err = capsys.readouterr()
        assert "Traceback" not in err, err
        return Done(code, out, err)

    return run


def envelope(i: int, *, action: str = "pull", tag: str | None = "v1") -> bytes:
    target = {"mediaType": MANIFEST, "digest": D1, "size": 500, "repository": "shop/api"}
    if tag:
        target["tag"] = tag
    return orjson.dumps({"events": [{
        "id": f"ev-{i}", "timestamp": f"2026-03-01T10:00:{i % 60:02d}.123456789Z",
        "action": action, "target": target,
        "request": {"method": "GET",
                    "useragent": "trivy/0.48.1" if i % 3 == 0 else "containerd/1.7"},
    }]})


def stored(tmp_path: Path) -> list[tuple[str, str]]:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        with store.connect() as conn:
            return [tuple(r) for r in conn.execute(  # type: ignore[misc]
                select(events.c.source_event_id, events.c.usage).order_by(events.c.id))]
    finally:
        store.dispose()


def test_distribution_files_with_bad_lines_and_retries(tmp_path: Path, run: Any) -> None:
    good = [envelope(i) for i in range(1, 7)]
    lines = [good[0], b"{broken", good[1], b'{"events": [{"id": "x"}]}', good[2], b""]
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    done = run("ingest", "distribution", "a.jsonl", "--batch-size", "2", cwd=tmp_path)
    assert done.returncode == 1  # some lines were rejected
    assert done.stdout.strip() == "read 3, stored 3, duplicates 0, rejected 2 (lines 2, 4)"
    assert "line 4: events[0].timestamp is required" in done.stderr
    # a gzip file and the same lines again: only the new ones are stored
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(b"\n".join(good)))
    done = run("ingest", "distribution", "b.jsonl.gz", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "read 6, stored 3, duplicates 3, rejected 0"
    got = stored(tmp_path)
    assert sorted(i for i, _ in got) == [f"ev-{i}" for i in range(1, 7)]
    assert dict(got)["ev-3"] == "scanner" and dict(got)["ev-1"] == "use"


def test_stdin_and_several_files_name_the_file_of_a_bad_line(tmp_path: Path, run: Any) -> None:
    (tmp_path / "x.jsonl").write_bytes(envelope(1) + b"\n[]\n")
    done = run("ingest", "distribution", "x.jsonl", "-", cwd=tmp_path,
               stdin=envelope(2) + b"\n")
    assert done.stdout.strip() == "read 2, stored 2, duplicates 0, rejected 1 (lines x.jsonl:2)"
    assert "x.jsonl: line 2: document must be an object" in done.stderr


def test_a_missing_file_stores_nothing(tmp_path: Path, run: Any) -> None:
    (tmp_path / "ok.jsonl").write_bytes(envelope(1) + b"\n")
    done = run("ingest", "distribution", "ok.jsonl", "missing.jsonl", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: cannot read missing.jsonl")
    assert stored(tmp_path) == []


def test_harbor_and_deploys(tmp_path: Path, run: Any) -> None:
    harbor = {"type": "PUSH_ARTIFACT", "occur_at": 1772359200, "operator": "ci",
              "event_data": {"resources": [{"digest": D2, "tag": "v2"}],
                             "repository": {"repo_full_name": "shop/api"}}}
    (tmp_path / "h.jsonl").write_bytes(orjson.dumps(harbor) + b"\n")
    assert run("ingest", "harbor", "h.jsonl", cwd=tmp_path).stdout.strip() == \
        "read 1, stored 1, duplicates 0, rejected 0"
    deploys = [{"timestamp": "2026-03-01T12:00:00Z", "image": "r.io/shop/api:v2",
                "environment": "production"},
               [{"timestamp": "2026-03-01T13:00:00Z", "image": f"r.io/shop/api@{D1}"},
                {"timestamp": "2026-03-01T14:00:00Z", "image": f"r.io/shop/api@{D1}"}]]
    (tmp_path / "d.jsonl").write_bytes(b"\n".join(orjson.dumps(d) for d in deploys))
    done = run("ingest", "deploys", "d.jsonl", cwd=tmp_path)
    assert done.stdout.strip() == "read 3, stored 3, duplicates 0, rejected 0"
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        with store.connect() as conn:
            got = conn.execute(select(rollups.c.digest, rollups.c["count"]).where(
                rollups.c.action == "deploy").order_by(rollups.c.digest)).all()
    finally:
        store.dispose()
    # the tag-only deploy got the digest the Harbor push gave v2
    assert got == [(D1, 2), (D2, 1)]


POD_LIST = {"apiVersion": "v1", "kind": "List", "items": [{
    "metadata": {"name": "api-1", "namespace": "shop"},
    "spec": {"containers": [{"name": "api", "image": "r.io/shop/api:v2"}]},
    "status": {"containerStatuses": [{"name": "api", "image": "r.io/shop/api:v2",
                                      "imageID": f"r.io/shop/api@{D2}"}]}}]}


def test_k8s_document_and_snapshot_lines(tmp_path: Path, run: Any) -> None:
    (tmp_path / "pods.json").write_bytes(orjson.dumps(POD_LIST, option=orjson.OPT_INDENT_2))
    done = run("ingest", "k8s", "pods.json", "--at", "2026-03-01T12:00:00Z", "--source", "eu-1",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "read 1 snapshot of 1 pods from eu-1: stored 1 running references"
    lines = [orjson.dumps({"source": "us-1", "taken_at": f"2026-03-0{d}T00:00:00Z",
                           "list": POD_LIST}) for d in (1, 2)]
    lines.insert(1, orjson.dumps({"source": "us-1", "taken_at": "never", "list": POD_LIST}))
    done = run("ingest", "k8s", "-", cwd=tmp_path, stdin=b"\n".join(lines))
    assert done.stdout.strip() == ("read 3 snapshots, stored 2 (2 pods, 2 running references), "
                                   "rejected 1 (lines 2)")
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        with store.connect() as conn:
            assert sorted(conn.execute(select(k8s_snapshots.c.source)).scalars()) == [
                "eu-1", "us-1", "us-1"]
            assert set(conn.execute(select(running_refs.c.digest)).scalars()) == {D2}
    finally:
        store.dispose()


def test_k8s_refuses_what_is_not_a_pod_list(tmp_path: Path, run: Any) -> None:
    (tmp_path / "bad.json").write_bytes(b'{"kind": "Deployment", "items": []}')
    done = run("ingest", "k8s", "bad.json", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: kind: expected List or PodList, got 'Deployment'"
    done = run("ingest", "k8s", "bad.json", "--at", "tuesday", cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.startswith("error: --at:")


def test_the_console_command_reads_a_pipe(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "recommender.cli", "--db", f"sqlite:///{tmp_path / 's.db'}",
         "ingest", "distribution", "-"],
        input=(envelope(1) + b"\n" + envelope(1) + b"\n{").decode(), capture_output=True,
        text=True, cwd=tmp_path, timeout=300,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stdout.strip() == "read 2, stored 1, duplicates 1, rejected 1 (lines 3)"


def test_a_store_failure_is_one_line(tmp_path: Path, run: Any) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    with store.begin() as conn:
        conn.exec_driver_sql("DROP TABLE rollups")  # a broken store: the write must fail
    store.dispose()
    (tmp_path / "a.jsonl").write_bytes(envelope(1) + b"\n")
    done = run("ingest", "distribution", "a.jsonl", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: the store refused the write: no such table: rollups"
    assert stored(tmp_path) == []  # the events insert was rolled back with it


def _everything(db: Path) -> dict[str, Any]:
    """Every table the ingest writes, without the ids and receipt times that differ by run."""
    from recommender.store.tables import manifests, tag_history

    store = open_store(f"sqlite:///{db}")
    try:
        with store.connect() as conn:
            return {
                "events": sorted(tuple(r) for r in conn.execute(select(*(
                    c for c in events.c if c.name not in ("id", "received_at"))))),
                "rollups": sorted(tuple(r) for r in conn.execute(select(*(
                    c for c in rollups.c if c.name != "id")))),
                "tags": sorted(tuple(r) for r in conn.execute(select(
                    tag_history.c.repository, tag_history.c.tag, tag_history.c.digest,
                    tag_history.c.valid_from, tag_history.c.valid_to))),
                "manifests": sorted(tuple(r) for r in conn.execute(select(
                    manifests.c.repository, manifests.c.digest, manifests.c.first_seen,
                    manifests.c.deleted_at))),
            }
    finally:
        store.dispose()


def test_a_file_parsed_in_the_second_process_stores_what_stdin_does(tmp_path: Path,
                                                                   run: Any) -> None:
    # A file is parsed in a forked process, stdin in this one: same lines, small batches
    # (many messages down the pipe), pushes, pulls, tag deletes, retries, bad lines. Stored:
    # 9 pushes, 4 deletes and 150 distinct pull ids (the rest are retries).
    def line(i: int) -> bytes:
        minute = f"2026-03-01T10:{i // 60:02d}:{i % 60:02d}.5Z"
        digest = (D1, D2)[i // 40 % 2]
        if i % 40 == 0:
            doc = {"id": f"p{i}", "timestamp": minute, "action": "push",
                   "target": {"mediaType": MANIFEST, "digest": digest, "tag": "v1",
                              "repository": "shop/api"}}
        elif i % 97 == 0:
            doc = {"id": f"d{i}", "timestamp": minute, "action": "delete",
                   "target": {"tag": "v1", "repository": "shop/api"}}
        else:
            doc = {"id": f"u{i % 150}", "timestamp": minute, "action": "pull",  # retries
                   "target": {"mediaType": MANIFEST, "digest": digest, "repository": "shop/api",
                              **({"tag": "v1"} if i % 3 else {})},
                   "request": {"method": "GET", "useragent": "containerd/1.7"}}
        return orjson.dumps({"events": [doc]})

    lines = [b"{broken" if i % 53 == 0 else line(i) for i in range(1, 400)]
    data = b"\n".join(lines) + b"\n"
    (tmp_path / "f").mkdir()
    (tmp_path / "s").mkdir()
    (tmp_path / "f" / "a.jsonl.gz").write_bytes(gzip.compress(data))
    by_file = run("ingest", "distribution", "f/a.jsonl.gz", "--batch-size", "7",
                  cwd=tmp_path / "f")
    by_stdin = run("ingest", "distribution", "-", "--batch-size", "7", cwd=tmp_path / "s",
                   stdin=data)
    assert by_file.stdout == by_stdin.stdout, by_file.stderr
    assert by_file.stdout.startswith("read 392, stored 163, duplicates 229, rejected 7 "
                                     "(lines 53, 106, 159,")
    assert by_file.stderr == by_stdin.stderr and by_file.returncode == by_stdin.returncode == 1
    got = _everything(tmp_path / "f" / "s.db")
    assert got == _everything(tmp_path / "s" / "s.db")
    assert len(got["events"]) == 163 and len(got["tags"]) > 1 and got["rollups"]


def test_a_file_into_either_store(store_url: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    # SQLite gets batches prepared by the parsing process, PostgreSQL its events as tuples.
    lines = [envelope(i, action="push" if i == 1 else "pull") for i in range(1, 8)]
    (tmp_path / "a.jsonl").write_bytes(b"\n".join([*lines, envelope(2), b"[]"]) + b"\n")
    code = main(["--db", store_url, "ingest", "distribution", str(tmp_path / "a.jsonl"),
                 "--batch-size", "3"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and code == 1
    assert out.strip() == "read 8, stored 7, duplicates 1, rejected 1 (lines 9)"
    store = open_store(store_url)
    try:
        with store.connect() as conn:
            assert len(conn.execute(select(events.c.id)).all()) == 7
            assert sum(conn.execute(select(rollups.c["count"])).scalars()) == 7
    finally:
        store.dispose()
