"""What the demo starts, and stops again whatever happens: the fake Slack Web API, the local
docker-registry and ``tagwarden serve`` as a subprocess.

Everything lives in one :class:`contextlib.ExitStack`, so an error or Ctrl-C in any step still
stops the server (SIGTERM: it drains what it received), the registry and the fake.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from bot.fakeslack import FakeSlack
from recommender.errors import TagwardenError
from recommender.registry.local import LocalRegistry, free_port

if TYPE_CHECKING:
    from .ecr import MotoEcr

__all__ = ["DemoError", "Server", "Services", "tagwarden_command"]


class DemoError(TagwardenError):
    """Raised when a step of the demo fails (a command exits non-zero, a service does not
    start); ``detail`` names the step and carries the command's last output."""


def tagwarden_command(*args: str) -> list[str]:
    """The CLI as a user runs it, from the same interpreter (the project's virtualenv)."""
    return [sys.executable, "-m", "recommender.cli", *args]


class Server:
    """``tagwarden serve`` in a subprocess on a loopback port chosen now."""

    def __init__(self, config_path: Path, env: Mapping[str, str], log_path: Path) -> None:
        self.config_path = config_path
        self.env = dict(env)
        self.log_path = log_path
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Server:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                tagwarden_command("--config", str(self.config_path), "serve", "--host",
                                  "127.0.0.1", "--port", str(self.port)),
                stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise DemoError(f"tagwarden serve exited with {self._proc.returncode}: "
                                f"{self.log_tail()}", step="serve")
            try:
                health = httpx.get(f"{self.url}/healthz", timeout=1.0)
                # Slack starts in the background; the demo clicks buttons, so it waits.
                if health.status_code == 200 and health.json().get("slack") == "ready":
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise DemoError(f"tagwarden serve did not answer on {self.url} with Slack ready in "
                        f"{timeout:.0f} s: {self.log_tail()}", step="serve")

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # graceful: received events are written first
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Services:
    """Owns every process and server the demo starts; ``close()`` stops them all, newest
    first. Use as a context manager."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._stack = ExitStack()
        self.slack: FakeSlack | None = None
        self.registry: LocalRegistry | None = None
        self.server: Server | None = None
        self.ecr: MotoEcr | None = None

    def start_fake_slack(self) -> FakeSlack:
        self.slack = FakeSlack(team_id="T0DEMO").start()
        self._stack.callback(self.slack.stop)
        return self.slack

    def start_registry(self) -> LocalRegistry:
        self.registry = LocalRegistry(self.workdir / "registry")
        self._stack.callback(self.registry.stop)
        self.registry.start()
        return self.registry

    def start_ecr(self) -> MotoEcr:
        from .ecr import MotoEcr

        self.ecr = MotoEcr()
        self._stack.callback(self.ecr.stop)
        self.ecr.start()
        return self.ecr

    def start_server(self, config_path: Path, env: Mapping[str, str]) -> Server:
        self.server = Server(config_path, {**os.environ, **env}, self.workdir / "serve.log")
        self._stack.callback(self.server.stop)
        self.server.start()
        return self.server

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
