"""The Slack implementation of :class:`recommender.notify.Notifier`.

``pyproject.toml`` declares it in the ``tagwarden.notifiers`` entry point group, where
:func:`recommender.notify.load_notifier` finds it: recommender calls it without importing
``bot``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from importlib import resources
from typing import Any

from recommender.config import Config
from recommender.errors import ConfigError
from recommender.notify import Notifier, ServerParts
from recommender.store import Store

from .app import default_client
from .digest import DigestReport, post_digest
from .posting import PostReport, post_suggestions, publish_results
from .serving import SlackStarter, off_parts

__all__ = ["MANIFEST_PLACEHOLDER", "SlackNotifier"]

# The request URLs' host in manifest.yml, replaced by the deployment's public URL.
MANIFEST_PLACEHOLDER = "https://tagwarden.example.com"


class SlackNotifier:
    """Posts through the Slack Web API with the configured bot token."""

    name = "slack"

    def __init__(self, config: Config) -> None:
        self.config = config

    def off_reason(self) -> str | None:
        if not self.config["slack.bot_token"]:
            return "slack.bot_token (SLACK_BOT_TOKEN) is not set"
        return None

    def post_suggestions(self, store: Store, suggestions: Iterable[Any], *,
                         now: datetime) -> PostReport:
        return post_suggestions(store, self.config, suggestions,
                                client=default_client(self.config), now=now)

    def publish_results(self, store: Store, *, now: datetime) -> list[str]:
        if self.off_reason() is not None:
            return []  # nothing was posted, so there is nothing to redraw
        return publish_results(store, client=default_client(self.config), now=now)

    def digest(self, store: Store, *, team: str, now: datetime, post: bool) -> DigestReport:
        client = default_client(self.config) if post else None
        return post_digest(store, self.config, team=team, client=client, now=now,
                           dry_run=not post)

    def app_manifest(self, public_url: str) -> str:
        text = resources.files("bot").joinpath("manifest.yml").read_text(encoding="utf-8")
        return text.replace(MANIFEST_PLACEHOLDER, public_url.rstrip("/"))

    def server_parts(self, store: Store, *, clock: Callable[[], datetime]) -> ServerParts:
        reason = self.off_reason()
        if reason is not None:
            return off_parts(reason)
        if not self.config["slack.app_token"] and not self.config["slack.signing_secret"]:
            # Checked here, before the background start: a configuration error stops serve.
            raise ConfigError("slack.signing_secret (SLACK_SIGNING_SECRET) is not set",
                              setting="slack.signing_secret")
        return SlackStarter(self.config, store, clock=clock).parts()


def _is_a_notifier(config: Config) -> Notifier:
    return SlackNotifier(config)  # mypy checks here that SlackNotifier fits the Protocol
