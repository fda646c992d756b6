"""The demo's Amazon ECR: moto's ECR server on loopback, the fleet pushed with ``put_image``,
and the fleet's history replayed as CloudTrail records (ECR sends no notifications).

moto does not compute digests, so every ``put_image`` carries ``imageDigest`` = sha256 of the
manifest's bytes, as ECR computes it. ECR's API cannot take or give back blobs: only the
manifests go up, and what the registry holds is read from ``describe_images``.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import orjson

from recommender.fleet import images
from recommender.fleet.cloudtrail import trail_records

from .replay import Poster, PushResult, ReplayResult, fleet_records, replay_usage
from .services import DemoError
from .storage import StorageFigures

__all__ = ["ACCOUNT", "REGION", "MotoEcr", "listed_images", "measure_ecr", "push_fleet_ecr",
           "replay_trail"]

REGION = "us-east-1"
ACCOUNT = "123456789012"  # the account moto answers as
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo",
               "AWS_DEFAULT_REGION": REGION}


@dataclass
class MotoEcr:
    """moto's server in a thread of this process, on a loopback port it picks."""

    url: str = ""
    _server: Any = None

    def start(self) -> MotoEcr:
        try:  # a dev dependency (make setup installs it); only this demo path needs it
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise DemoError("the ECR demo needs moto's server: run `make setup` (or pip "
                            "install 'moto[server]')", step="ecr") from exc

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def client(self) -> Any:
        return boto3.client("ecr", endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()


def push_fleet_ecr(client: Any, fleet_dir: Path, *, byte_scale: float,
                   workers: int = 8) -> PushResult:
    """Create the fleet's repositories and ``put_image`` every alive manifest, then its tags."""
    records = fleet_records(fleet_dir / "inventory.jsonl")
    for repository in sorted({r["repository"] for r in records}):
        client.create_repository(repositoryName=repository)
    result = PushResult()

    def push(record: dict[str, Any]) -> int:
        m = images.materialize(record, byte_scale=byte_scale)
        put = {"repositoryName": m.repository, "imageManifest": m.manifest.decode(),
               "imageManifestMediaType": m.media_type, "imageDigest": m.digest}
        client.put_image(**put)
        tags = record.get("tags") or []
        for tag in tags:
            client.put_image(**put, imageTag=tag)
        return len(tags)

    # records come children first; a wave per kind keeps an index after its platforms
    for kind in ("image", "index", "signature"):
        wave = [r for r in records if r.get("kind", "image") == kind]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for tags in pool.map(push, wave):
                result.manifests += 1
                result.tags += tags
    return result


def listed_images(client: Any) -> dict[str, dict[str, Any]]:
    """Every image ``describe_images`` lists, by ``repository@digest``."""
    found: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("describe_repositories").paginate():
        for repo in page["repositories"]:
            for details in client.get_paginator("describe_images").paginate(
                    repositoryName=repo["repositoryName"]):
                for d in details["imageDetails"]:
                    found[f"{repo['repositoryName']}@{d['imageDigest']}"] = d
    return found


def measure_ecr(images: dict[str, dict[str, Any]]) -> StorageFigures:
    """Images, tags and bytes of :func:`listed_images` (ECR has no blobs to count)."""
    return StorageFigures(len(images),
                          sum(len(d.get("imageTags") or []) for d in images.values()), 0,
                          sum(int(d.get("imageSizeInBytes") or 0) for d in images.values()))


def replay_trail(base_url: str, token: str, fleet_dir: Path, *,
                 records_per_post: int = 400) -> ReplayResult:
    """POST the history as a trail's ``{"Records": [...]}`` files, then deploys and pods."""

    def events() -> Iterator[dict[str, Any]]:
        with gzip.open(fleet_dir / "distribution.jsonl.gz", "rb") as fh:
            for line in fh:
                yield from orjson.loads(line)["events"]

    def send(poster: Poster, chunk: list[dict[str, Any]]) -> int:
        answer = poster.post("/v1/events/cloudtrail", orjson.dumps({"Records": chunk}),
                             "application/json")
        return int(answer.get("accepted", 0))

    # In order: a pull by tag is resolved from the tag history the collector holds when the
    # record arrives, so the PutImage records before it must be stored first.
    return replay_usage(base_url, token, fleet_dir, trail_records(
        events(), account=ACCOUNT, region=REGION), send, per_post=records_per_post,
        in_order=True)
