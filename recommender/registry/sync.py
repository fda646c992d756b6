"""The synchronous Distribution client, on ``httpx.Client``: the executor, backups, restores,
the demo's pushes. Thread-safe: the executor's workers share one."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import httpx

from ..errors import NotFound, RegistryError
from .errors import redact_url, retry_after
from .models import Manifest, Referrer
from .operations import USER_AGENT, Call, ClientBase, Op, T, ping
from .protocol import CallRecorder, Deleted, ImageRecord, ReclaimHint

__all__ = ["RecordingTransport", "RegistryClient"]


class RecordingTransport(httpx.BaseTransport):
    """Hands every exchange to a :class:`~.protocol.CallRecorder` (the executor's audit)."""

    def __init__(self, recorder: CallRecorder, inner: httpx.BaseTransport) -> None:
        self.recorder = recorder
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self.inner.handle_request(request)
        except httpx.HTTPError as exc:
            self.recorder.record(request.method, redact_url(str(request.url)),
                                 type(exc).__name__)
            raise
        # A DELETE is not retried by the client and its error does not carry the header,
        # yet the next attempt must wait: keep a 429/503's Retry-After with the call.
        wait = retry_after(response) if response.status_code in (429, 503) else None
        self.recorder.record(request.method, redact_url(str(request.url)),
                             response.status_code, wait)
        return response

    def close(self) -> None:
        self.inner.close()


class RegistryClient(ClientBase):
    """Synchronous client (``httpx.Client``; httpx's own transport unless ``transport`` is
    given). ``recorder`` receives every exchange; ``sleep`` is the retries' clock."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        transport: httpx.BaseTransport | None = None,
        recorder: CallRecorder | None = None,
        timeout: float = 30,
        user_agent: str = USER_AGENT,
        retries: int = 3,
        backoff: float = 0.2,
        verify: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        max_connections: int = 20,
        reclaim: ReclaimHint | None = None,
    ) -> None:
        super().__init__(base_url, auth=auth, timeout=timeout, user_agent=user_agent,
                         retries=retries, backoff=backoff, reclaim=reclaim)
        self._sleep = sleep
        limits = httpx.Limits(max_connections=max_connections,
                              max_keepalive_connections=max_connections)
        if recorder is not None:
            transport = RecordingTransport(
                recorder, transport or httpx.HTTPTransport(verify=verify, limits=limits))
        self._http = httpx.Client(
            auth=self.auth, transport=transport, timeout=timeout, verify=verify,
            headers={"User-Agent": user_agent}, follow_redirects=True, limits=limits,
        )

    def _request(self, call: Call) -> httpx.Request:
        # build_request merges the client's defaults (User-Agent, timeout) into the request.
        return self._http.build_request(call.method, self._url(call), params=call.params,
                                        headers=call.headers, content=call.content)

    def _send(self, call: Call) -> httpx.Response:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            exc: Exception | None = None
            try:
                response = self._http.send(self._request(call))
            except httpx.HTTPError as err:
                exc = err
            error, delay = self._outcome(call, attempt, response, exc)
            if error is None:
                assert response is not None
                return response
            if delay < 0:
                raise error from exc
            self._sleep(delay)
            attempt += 1

    def _run(self, op: Op[T]) -> T:
        try:
            call = next(op)
            while True:
                call = op.send(self._send(call))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def ping(self) -> None:
        self._run(ping())

    def catalog(self, *, n: int | None = None) -> list[str]:
        return self._run(self._catalog(n))

    def repositories(self) -> list[str]:
        return self.catalog()

    def list_tags(self, repo: str, *, n: int | None = None) -> list[str]:
        return self._run(self._list_tags(repo, n))

    def list_images(self, repo: str) -> list[ImageRecord] | None:
        """None: the Distribution API has no bulk listing of a repository's manifests."""
        return None

    def get_manifest(self, repo: str, ref: str) -> Manifest:
        return self._run(self._get_manifest(repo, ref))

    def head_manifest(self, repo: str, ref: str) -> str | None:
        return self._run(self._head_manifest(repo, ref))

    def resolve(self, repo: str, tag: str) -> str:
        """The digest a tag names now: full Accept list, verified by hashing the body."""
        return self.get_manifest(repo, tag).digest

    def delete_manifest(self, repo: str, digest: str) -> None:
        self._run(self._delete_manifest(repo, digest))

    def delete_many(self, repo: str, digests: Sequence[str]) -> list[Deleted]:
        """One DELETE per digest, in the order given (the API has no batch delete)."""
        done: list[Deleted] = []
        for digest in digests:
            try:
                self.delete_manifest(repo, digest)
            except NotFound:
                done.append(Deleted(digest, "gone"))
            except RegistryError as exc:
                done.append(Deleted(digest, "failed", exc))
            else:
                done.append(Deleted(digest, "deleted"))
        return done

    def untag(self, repo: str, tag: str) -> None:
        self._run(self._untag(repo, tag))

    def get_blob(self, repo: str, digest: str) -> bytes:
        return self._run(self._get_blob(repo, digest))

    def blob_size(self, repo: str, digest: str) -> int | None:
        return self._run(self._blob_size(repo, digest))

    def push_blob(self, repo: str, data: bytes, *, mount_from: str | None = None) -> str:
        return self._run(self._push_blob(repo, data, mount_from))

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        return self._run(self._put_manifest(repo, ref, body, media_type))

    def referrers(self, repo: str, digest: str) -> list[Referrer]:
        return self._run(self._referrers(repo, digest))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
