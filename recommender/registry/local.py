"""A throwaway local Distribution registry: Debian's ``docker-registry`` on loopback.

Used by the demo, the tests and the benchmarks. The port is chosen at run time; storage is a
directory of the caller's; deletes are enabled; notifications can point at a collector.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from ..errors import TagwardenError

__all__ = ["LocalRegistry", "RegistryNotInstalled", "free_port", "registry_binary"]

_CANDIDATES = ("docker-registry", "/usr/bin/docker-registry", "registry")


class RegistryNotInstalled(TagwardenError):
    """Raised when Debian's docker-registry binary is not on this machine."""


def registry_binary() -> str | None:
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalRegistry:
    """``docker-registry serve`` with a generated config.

    ``notify_url`` (and ``notify_token``) add a notifications endpoint; ``read_only`` puts
    the registry in maintenance read-only mode (what garbage collection wants).

    ``memory_limit`` (a Go ``GOMEMLIMIT`` value, as in the default) runs the registry with
    ``GOGC=off`` and that soft limit: Go then collects garbage only as the heap nears the
    limit. Why: Distribution's blob reader allocates a large ``bufio`` buffer for every blob
    GET (``registry/storage/filereader.go``), so with Go's default ``GOGC=100`` and a small
    live heap nearly every config-blob GET triggers a collection, which costs the registry
    most of its CPU per GET (bench/, "Registry scan"). ``None`` keeps Go's defaults.
    """

    root: Path
    port: int = 0
    notify_url: str | None = None
    notify_token: str | None = None
    notify_backoff: str = "500ms"
    read_only: bool = False
    log_level: str = "error"
    memory_limit: str | None = "256MiB"
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yml"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    def write_config(self) -> Path:
        if not self.port:
            self.port = free_port()
        self.root.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": self.log_level, "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {
                    "uploadpurging": {"enabled": False},
                    "readonly": {"enabled": self.read_only},
                },
            },
            "http": {"addr": self.host, "secret": "tagwarden-local"},
        }
        if self.notify_url:
            endpoint: dict[str, object] = {
                "name": "tagwarden",
                "url": self.notify_url,
                "timeout": "2s",
                "threshold": 3,
                "backoff": self.notify_backoff,
            }
            if self.notify_token:
                endpoint["headers"] = {"Authorization": [f"Bearer {self.notify_token}"]}
            config["notifications"] = {"endpoints": [endpoint]}
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return self.config_path

    def environment(self) -> dict[str, str]:
        """The registry process's environment: ours, with the Go GC settings (see above)."""
        env = dict(os.environ)
        if self.memory_limit:
            env["GOGC"], env["GOMEMLIMIT"] = "off", self.memory_limit
        return env

    def start(self, timeout: float = 20.0) -> LocalRegistry:
        binary = registry_binary()
        if binary is None:
            raise RegistryNotInstalled(
                "docker-registry is not installed (apt-get install docker-registry)"
            )
        self.write_config()
        log = (self.root / "registry.log").open("ab")
        self._proc = subprocess.Popen(
            [binary, "serve", str(self.config_path)], stdout=log, stderr=subprocess.STDOUT,
            env=self.environment(),
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise TagwardenError(
                    f"docker-registry exited with {self._proc.returncode}: "
                    + (self.root / "registry.log").read_text(errors="replace")[-2000:]
                )
            try:
                # 200 when open, 401 when auth is configured: either way it serves.
                if httpx.get(f"{self.url}/v2/", timeout=1.0).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TagwardenError(f"docker-registry did not answer on {self.url} in {timeout}s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def restart(self, *, read_only: bool | None = None) -> LocalRegistry:
        self.stop()
        if read_only is not None:
            self.read_only = read_only
        return self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def gc_command(self, *, dry_run: bool = False, delete_untagged: bool = False) -> list[str]:
        cmd = [registry_binary() or "docker-registry", "garbage-collect"]
        if dry_run:
            cmd.append("--dry-run")
        if delete_untagged:
            cmd.append("--delete-untagged")
        return [*cmd, str(self.config_path)]

    def garbage_collect(self, *, dry_run: bool = False) -> str:
        """Run GC on the storage (the registry should be stopped or read-only meanwhile)."""
        done = subprocess.run(
            self.gc_command(dry_run=dry_run), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise TagwardenError(f"garbage-collect failed: {done.stderr.strip()[-2000:]}")
        return done.stdout

    def blob_files(self) -> set[str]:
        """Digests of the blobs present in storage (to check what GC freed)."""
        base = self.storage / "docker/registry/v2/blobs"
        if not base.exists():
            return set()
        return {
            f"{p.parent.parent.parent.name}:{p.parent.name}"
            for p in base.glob("*/*/*/data")
        }

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
