"""Telling people about tagwarden's work, without knowing who listens.

``bot`` (the Slack app) builds on ``recommender``, so ``recommender`` never imports it. What
the CLI, ``tagwarden serve`` and the scheduler need from it is this :class:`Notifier`: post
suggestion batches, redraw them with the executor's results, post a digest, and the server's
part (routes, lifespan hooks, a status for ``/healthz`` and ``/metrics``).

:func:`load_notifier` finds the installed implementation through the ``tagwarden.notifiers``
entry point group (``pyproject.toml`` declares ``slack = "bot.notify:SlackNotifier"``): every
way in (the console script, ``python -m``, each ``serve --workers`` process, tests) finds it
the same way, and no code here names the package that provides it. With none installed,
:class:`NoNotifier` says why nothing can be posted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Config
    from .store import Store

__all__ = ["ENTRY_POINT_GROUP", "DigestResult", "NoNotifier", "Notifier", "PostResult",
           "ServerParts", "load_notifier"]

ENTRY_POINT_GROUP = "tagwarden.notifiers"


class PostResult(Protocol):
    """What posting suggestion batches did, batch ids in each list."""

    recorded: list[str]  # batches created by this run
    posted: list[str]
    failed: dict[str, str]  # batch id -> error
    skipped: dict[str, str]  # batch id -> why not posted


class DigestResult(Protocol):
    """One team's digest: its messages, and what posting them did (``ts`` None: not posted)."""

    channel: str
    ts: str | None
    pages_posted: int
    pages_failed: int
    messages: list[dict[str, Any]]


@dataclass
class ServerParts:
    """What a notifier adds to ``tagwarden serve``.

    ``status`` is one short phrase for ``/healthz`` ("ready", "unreachable, retrying", "off:
    ..."); ``ready`` says whether it can take requests now (the ``/metrics`` gauge).
    """

    name: str
    status: Callable[[], str]
    ready: Callable[[], bool]
    routes: Sequence[Any] = ()
    lifespans: Sequence[Callable[[Any], AbstractAsyncContextManager[None]]] = field(
        default_factory=list)


class Notifier(Protocol):
    name: str

    def off_reason(self) -> str | None:
        """None when it can post; otherwise why not, in one line."""

    def post_suggestions(self, store: Store, suggestions: Iterable[Any], *,
                         now: datetime) -> PostResult:
        """Record new batches from ``suggestions`` and post every unposted pending batch."""

    def publish_results(self, store: Store, *, now: datetime) -> list[str]:
        """Update the message of every batch the executor has finished; the batch ids."""

    def digest(self, store: Store, *, team: str, now: datetime, post: bool) -> DigestResult:
        """Build a team's digest; send it when ``post``."""

    def app_manifest(self, public_url: str) -> str:
        """The app's manifest for the chat workspace, its request URLs at ``public_url``."""

    def server_parts(self, store: Store, *, clock: Callable[[], datetime]) -> ServerParts:
        """Routes and lifespan hooks for ``tagwarden serve``; never blocks on the network."""


class NoNotifier:
    """No notifier is installed or configured: nothing is posted, and every attempt says why."""

    name = "slack"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def off_reason(self) -> str | None:
        return self.reason

    def _refuse(self) -> ConfigError:
        return ConfigError(f"Slack is off: {self.reason}", setting="slack.bot_token")

    def post_suggestions(self, store: Store, suggestions: Iterable[Any], *,
                         now: datetime) -> PostResult:
        raise self._refuse()

    def publish_results(self, store: Store, *, now: datetime) -> list[str]:
        return []  # nothing was posted, so there is nothing to redraw

    def digest(self, store: Store, *, team: str, now: datetime, post: bool) -> DigestResult:
        raise self._refuse()

    def app_manifest(self, public_url: str) -> str:
        raise self._refuse()

    def server_parts(self, store: Store, *, clock: Callable[[], datetime]) -> ServerParts:
        return ServerParts(self.name, status=lambda: f"off: {self.reason}",
                           ready=lambda: False)


def load_notifier(config: Config) -> Notifier:
    """The notifier installed under ``tagwarden.notifiers`` (the first by name), built from
    ``config``; :class:`NoNotifier` when there is none. One that is declared but fails to
    import raises: a broken installation, not a choice."""
    found = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    if not found:
        return NoNotifier(f"no notifier is installed (entry point group {ENTRY_POINT_GROUP})")
    notifier: Notifier = found[0].load()(config)
    return notifier
