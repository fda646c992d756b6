"""Amazon ECR's API on loopback: moto's server, behind a front that behaves like ECR where moto
does not.

moto in server mode (``ThreadedMotoServer``) answers ECR's JSON API with its own state. Where it
differs from ECR in ways the ECR backend's tests depend on, :class:`EcrServer` puts a small
HTTP front on loopback between boto3 and moto that adds ECR's behaviour:

- pages: ``DescribeRepositories``, ``DescribeImages`` and ``ListImages`` honour ``maxResults``
  and ``nextToken`` (moto answers everything at once);
- ``lastRecordedPullTime``: set by a test with :meth:`EcrServer.record_pull` (moto leaves it
  out), as ECR records a pull;
- sizes: ``imageSizeInBytes`` is the sum of a manifest's layer sizes and, for an index, the
  largest of its children's, as ECR documents (moto reports the config blob's size);
- ``BatchDeleteImage`` refuses an image an index in the repository still lists, with ECR's
  ``ImageReferencedByManifestList`` (moto deletes it).

Nothing here is in the product; the product talks to this front as to ECR. Every other call
goes to moto as it is. Helpers push images with ``put_image`` and compute the digest moto does
not (sha256 of the manifest bytes, as ECR does).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import httpx

from recommender.registry import mediatypes as mt

__all__ = ["EcrServer", "PushedEcrImage", "ecr_server"]

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's account
_TARGET = "AmazonEC2ContainerRegistry_V20150921."
# The list each paged operation answers, and ECR's default page size for it.
_PAGED = {"DescribeRepositories": ("repositories", 100), "DescribeImages": ("imageDetails", 100),
          "ListImages": ("imageIds", 100)}


def _digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class PushedEcrImage:
    """What a helper pushed: the manifest's digest, its exact bytes and media type."""

    repository: str
    digest: str
    body: bytes
    media_type: str
    tag: str | None
    layer_bytes: int = 0

    @property
    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.body)}


@dataclass
class EcrServer:
    """moto's ECR behind the conformance front. ``url`` is the front's (give it to boto3)."""

    moto_url: str
    url: str = ""
    pulls: dict[tuple[str, str], datetime] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)  # X-Amz-Target operations, in order
    # Most items a page holds whatever maxResults asks (ECR may answer fewer than asked):
    # lets a test see paging without pushing thousands of images.
    page_limit: int = 1000
    _http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _moto: Any = None

    # -- what tests use ----------------------------------------------------------------------

    def client(self) -> Any:
        """A boto3 ECR client on the front (credentials from the environment the fixture set)."""
        return boto3.client("ecr", endpoint_url=self.url, region_name=REGION)

    def moto_client(self) -> Any:
        """A boto3 client on moto itself (made once: making one costs more than a call)."""
        if self._moto is None:
            self._moto = boto3.client("ecr", endpoint_url=self.moto_url, region_name=REGION,
                                      aws_access_key_id="testing",
                                      aws_secret_access_key="testing")
        return self._moto

    def create_repository(self, name: str) -> None:
        self.moto_client().create_repository(repositoryName=name)

    def record_pull(self, repository: str, digest: str, when: datetime) -> None:
        """ECR saw a pull of ``digest`` at ``when``: ``lastRecordedPullTime`` says so now."""
        self.pulls[(repository, digest)] = when

    def put(self, repository: str, body: bytes, media_type: str, tag: str | None = None,
            *, layer_bytes: int = 0) -> PushedEcrImage:
        kwargs: dict[str, Any] = {"repositoryName": repository, "imageManifest": body.decode(),
                                  "imageManifestMediaType": media_type,
                                  "imageDigest": _digest(body)}
        if tag is not None:
            kwargs["imageTag"] = tag
        self.moto_client().put_image(**kwargs)
        return PushedEcrImage(repository, _digest(body), body, media_type, tag, layer_bytes)

    def push_image(self, repository: str, tag: str | None, *, seed: str,
                   layer_sizes: tuple[int, ...] = (1000,),
                   created: str = "2026-01-01T00:00:00Z") -> PushedEcrImage:
        """A single-platform OCI image whose layers are named by ``seed`` (not uploaded: ECR's
        API has no way to read a blob back, so a scan never asks for one)."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "created": created,
                             "config": {"Labels": {"seed": seed}}}).encode()
        layers = [{"mediaType": mt.OCI_LAYER_GZIP, "size": size,
                   "digest": _digest(f"{seed}/layer{i}".encode())}
                  for i, size in enumerate(layer_sizes)]
        manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                    "config": {"mediaType": mt.OCI_CONFIG, "digest": _digest(config),
                               "size": len(config)},
                    "layers": layers}
        return self.put(repository, json.dumps(manifest).encode(), mt.OCI_MANIFEST, tag,
                        layer_bytes=sum(layer_sizes))

    def push_index(self, repository: str, tag: str | None,
                   children: list[tuple[PushedEcrImage, str]]) -> PushedEcrImage:
        """An OCI index of already pushed ``(child, "os/arch")`` manifests."""
        manifests = []
        for child, platform in children:
            os_, arch = platform.split("/", 1)
            manifests.append({**child.descriptor,
                              "platform": {"os": os_, "architecture": arch}})
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
        return self.put(repository, json.dumps(index).encode(), mt.OCI_INDEX, tag)

    def push_signature(self, repository: str, subject: PushedEcrImage,
                       tag: str | None = None) -> PushedEcrImage:
        """A cosign-style signature as an OCI 1.1 artifact whose ``subject`` is ``subject``."""
        payload = json.dumps({"critical": {"image": {"docker-manifest-digest":
                                                     subject.digest}}}).encode()
        manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                    "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
                    "config": {"mediaType": mt.OCI_EMPTY, "digest": _digest(b"{}"), "size": 2},
                    "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                                "digest": _digest(payload), "size": len(payload)}],
                    "subject": subject.descriptor}
        return self.put(repository, json.dumps(manifest).encode(), mt.OCI_MANIFEST, tag,
                        layer_bytes=len(payload))

    def digests(self, repository: str) -> set[str]:
        """The digests ``describe_images`` lists now (straight from moto)."""
        pages = self.moto_client().get_paginator("describe_images").paginate(
            repositoryName=repository)
        return {d["imageDigest"] for page in pages for d in page["imageDetails"]}

    # -- the front -----------------------------------------------------------------------------

    def _forward(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        response = self._http.post(self.moto_url + "/", headers=headers, content=body)
        keep = {k: v for k, v in response.headers.items()
                if k.lower() in ("content-type", "x-amzn-requestid")}
        return response.status_code, keep, response.content

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        operation = headers.get("x-amz-target", "").removeprefix(_TARGET)
        self.calls.append(operation)
        request = json.loads(body or b"{}")
        if operation == "BatchDeleteImage":
            return self._batch_delete(headers, request)
        if operation not in _PAGED:
            return self._forward(headers, body)
        key, default_size = _PAGED[operation]
        size = min(int(request.pop("maxResults", default_size)), self.page_limit)
        token = request.pop("nextToken", None)
        status, out_headers, content = self._forward(headers, json.dumps(request).encode())
        if status != 200:
            return status, out_headers, content
        answer = json.loads(content)
        items = answer.get(key) or []
        if operation == "DescribeImages":
            self._ecr_details(request["repositoryName"], items)
        start = int(base64.b64decode(token)) if token else 0
        answer[key] = items[start:start + size]
        answer.pop("nextToken", None)
        if start + size < len(items):
            answer["nextToken"] = base64.b64encode(str(start + size).encode()).decode()
        return status, out_headers, json.dumps(answer).encode()

    def _manifests(self, repository: str) -> dict[str, dict[str, Any]]:
        """Every image's manifest in the repository, by digest (straight from moto)."""
        ids = [{"imageDigest": d} for d in sorted(self.digests(repository))]
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 100):
            got = self.moto_client().batch_get_image(repositoryName=repository,
                                                     imageIds=ids[start:start + 100])
            for image in got["images"]:
                found[image["imageId"]["imageDigest"]] = json.loads(image["imageManifest"])
        return found

    def _ecr_details(self, repository: str, details: list[dict[str, Any]]) -> None:
        manifests = self._manifests(repository)

        def size(digest: str) -> int:
            doc = manifests.get(digest) or {}
            if doc.get("manifests"):
                return max((size(c["digest"]) for c in doc["manifests"]), default=0)
            return sum(int(layer.get("size") or 0) for layer in doc.get("layers") or [])

        for detail in details:
            digest = detail["imageDigest"]
            detail["imageSizeInBytes"] = size(digest)
            pulled = self.pulls.get((repository, digest))
            if pulled is not None:
                detail["lastRecordedPullTime"] = pulled.timestamp()

    def _batch_delete(self, headers: dict[str, str],
                      request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        repository = request["repositoryName"]
        with self._lock:  # the check and the delete as one step, as ECR's own
            manifests = self._manifests(repository)
            listed = {c["digest"]: parent for parent, doc in manifests.items()
                      for c in doc.get("manifests") or [] if isinstance(c, dict)}
            refused, passed = [], []
            for image_id in request.get("imageIds") or []:
                parent = listed.get(image_id.get("imageDigest", ""))
                if parent is not None:
                    refused.append({"imageId": image_id,
                                    "failureCode": "ImageReferencedByManifestList",
                                    "failureReason": f"Requested image referenced by manifest "
                                                     f"list: [{parent}]"})
                else:
                    passed.append(image_id)
            answer: dict[str, Any] = {"imageIds": [], "failures": []}
            if passed:
                status, out_headers, content = self._forward(
                    headers, json.dumps({**request, "imageIds": passed}).encode())
                if status != 200:
                    return status, out_headers, content
                answer = json.loads(content)
                # moto names a deleted image once per tag it had, an untagged one not at all;
                # ECR names each deleted id.
                named = {i.get("imageDigest") for i in answer.get("imageIds") or []}
                named |= {(f.get("imageId") or {}).get("imageDigest")
                          for f in answer.get("failures") or []}
                answer["imageIds"] = list(answer.get("imageIds") or []) + [
                    i for i in passed if i.get("imageDigest") not in named]
            else:
                out_headers = {"Content-Type": "application/x-amz-json-1.1"}
            answer["failures"] = list(answer.get("failures") or []) + refused
            return 200, out_headers, json.dumps(answer).encode()

    def reset(self) -> None:
        """Forget every repository and pull: moto keeps one state per process."""
        self._http.post(self.moto_url + "/moto-api/reset").raise_for_status()
        self.pulls.clear()
        self.calls.clear()
        self.page_limit = 1000

    def close(self) -> None:
        self._http.close()


def _serve_front(ecr: EcrServer) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            forward = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("host", "content-length", "connection")}
            try:
                status, headers, content = ecr.answer(
                    {k.lower(): v for k, v in forward.items()}, body)
            except Exception as exc:  # noqa: BLE001 - a bug here must reach the test as a 500
                status, headers = 500, {"Content-Type": "application/x-amz-json-1.1"}
                content = json.dumps({"__type": "ServerException",
                                      "message": f"test front: {exc!r}"}).encode()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def ecr_server() -> Iterator[EcrServer]:
    """Start moto's server and the front on loopback (ports chosen at run time); stop both.

    The caller sets fake AWS credentials in the environment first (the fixture does)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    ecr = EcrServer(moto_url=f"http://{host}:{port}")
    front = _serve_front(ecr)
    ecr.url = f"http://127.0.0.1:{front.server_address[1]}"
    try:
        yield ecr
    finally:
        front.shutdown()
        front.server_close()
        ecr.close()
        moto.stop()
