"""Real notifications from a real ``docker-registry`` (2.8), parsed and written.

A small recording HTTP server on loopback stands in for the collector's transport (A2's
endpoints have their own tests); what is under test is that the envelopes Distribution really
sends -- blob events, HEAD by tag, GET by digest, a scanner, a delete, a redelivery -- come out
of ``parse_envelope`` and ``EventWriter`` classified and attributed right.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from recommender.collector.distribution import parse_envelope
from recommender.collector.writer import EventWriter
from recommender.registry.push import push_image
from recommender.registry.sync import RegistryClient
from recommender.store import Store
from recommender.store.tables import events, manifests, rollups, tag_history
from recommender.usage import Classifier

DOCKER = "docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.5.0 os/linux arch/amd64"
CONTAINERD = "containerd/v1.7.11"
TRIVY = "trivy/0.48.1"
ACCEPT = ("application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json")


class Recorder:
    """Records every delivery; the first one is answered 500 so the registry sends it again."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with recorder.lock:
                    recorder.bodies.append(body)
                    first = len(recorder.bodies) == 1
                self.send_response(500 if first else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/events/distribution"

    def envelopes(self) -> list[Any]:
        with self.lock:
            return [orjson.loads(b) for b in self.bodies]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    rec.thread.start()
    try:
        yield rec
    finally:
        rec.server.shutdown()
        rec.server.server_close()


def wait_for(rec: Recorder, predicate: Any, timeout: float = 30.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for env in rec.envelopes() for e in env["events"]]
        if predicate(found):
            return found
        time.sleep(0.1)
    raise AssertionError(f"registry did not deliver in {timeout}s: {rec.envelopes()}")


def test_real_registry_notifications(store: Store, registry_factory: Any,
                                     recorder: Recorder) -> None:
    reg = registry_factory(notify_url=recorder.url, notify_backoff="200ms")
    with RegistryClient(reg.url, user_agent=DOCKER) as pusher:
        pushed = push_image(pusher, "shop/api", "v1", layers=(2048,))
    digest = pushed.digest
    with httpx.Client(base_url=reg.url, headers={"Accept": ACCEPT}) as http:
        # containerd resolves the tag with HEAD, then fetches by digest
        assert http.head("/v2/shop/api/manifests/v1",
                         headers={"User-Agent": CONTAINERD}).status_code == 200
        assert http.get(f"/v2/shop/api/manifests/{digest}",
                        headers={"User-Agent": CONTAINERD}).status_code == 200
        assert http.get("/v2/shop/api/manifests/v1",
                        headers={"User-Agent": TRIVY}).status_code == 200
    with RegistryClient(reg.url) as janitor:
        janitor.delete_manifest("shop/api", digest)

    found = wait_for(recorder, lambda evs: any(
        e["action"] == "delete" and "tag" in e["target"] for e in evs))
    envelopes = recorder.envelopes()
    assert len(recorder.bodies) >= 2  # the first delivery was refused and sent again

    classifier = Classifier()
    writer = EventWriter(store)
    now = datetime.now(UTC)
    total = stored = 0
    for env in envelopes:
        result = writer.write(parse_envelope(env, classifier), now=now)
        total += result.received
        stored += result.stored
    unique = {e["id"] for e in found}
    assert stored == len(unique) and total == len(found)  # a redelivery is stored once

    with store.connect() as conn:
        rows = conn.execute(select(events.c.action, events.c.usage, events.c.method,
                                   events.c.tag, events.c.digest, events.c.media_type)).all()
        manifest_rows = [r for r in rows if r.digest == digest]
        assert ("push", "use", "PUT", "v1", digest) in {r[:5] for r in manifest_rows}
        assert ("pull", "use", "HEAD", "v1", digest) in {r[:5] for r in manifest_rows}
        assert ("pull", "use", "GET", None, digest) in {r[:5] for r in manifest_rows}
        assert ("pull", "scanner", "GET", "v1", digest) in {r[:5] for r in manifest_rows}
        assert ("delete", "self", "DELETE", None, digest) in {r[:5] for r in manifest_rows}
        # the manifest delete is followed by a delete of each tag it carried, by tag only
        assert ("delete", "self", "DELETE", "v1", None) in {r[:5] for r in rows}
        blob_rows = [r for r in rows if r.digest not in (digest, None)]
        assert blob_rows and {r.usage for r in blob_rows} == {"blob"}  # layers and config

        assert conn.execute(select(manifests.c.deleted_at).where(
            manifests.c.digest == digest)).scalar_one() is not None
        [(valid_to,)] = conn.execute(select(tag_history.c.valid_to).where(
            tag_history.c.tag == "v1")).all()
        assert valid_to is not None  # the delete closed the tag
        uses = conn.execute(select(rollups.c.usage, rollups.c["count"]).where(
            rollups.c.digest == digest, rollups.c.action == "pull")).all()
    tally: dict[str, int] = {}
    for usage, count in uses:
        tally[usage] = tally.get(usage, 0) + count
    assert tally == {"use": 2, "scanner": 1}
