"""Who may decide: checked on every click, against the team that owns the repository.

A user may approve, deny or snooze a batch when they are in the owning team's
``approvers`` list or in its Slack user group (``approver_group``, read with
``usergroups.users.list`` and cached briefly, so a removal takes effect within ``ttl``). User
groups need a paid Slack plan: when the lookup fails, the allow-list alone decides (fail closed).
The workspace is checked too: with ``slack.team_id`` set, clicks from another workspace are
refused. Cancel is open to anyone in the workspace: it only ever stops a deletion
(docs/design.md, invariant 2: anyone may cancel during the cooling-off); it is audited with who
clicked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from recommender.config import Config

__all__ = ["Authorizer", "Verdict"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str
    team: str | None = None

    def __bool__(self) -> bool:
        return self.allowed


class Authorizer:
    """``Authorizer(config, client).check(user_id=..., repository=..., workspace=...)``."""

    def __init__(self, config: Config, client: WebClient, *, ttl: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.client = client
        self.ttl = ttl
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, frozenset[str] | None]] = {}
        self._lock = threading.Lock()

    def group_members(self, group: str) -> frozenset[str] | None:
        """Members of a user group, cached for ``ttl`` seconds; None when Slack will not say."""
        now = self._monotonic()
        with self._lock:
            hit = self._cache.get(group)
            if hit is not None and now - hit[0] < self.ttl:
                return hit[1]
        members: frozenset[str] | None
        try:
            resp = self.client.usergroups_users_list(usergroup=group)
            members = frozenset(resp.get("users") or [])
        except SlackApiError as exc:
            # paid_only, no_such_subteam, missing_scope: the allow-list alone decides.
            log.warning("usergroups.users.list %s: %s", group, exc.response.get("error"))
            if exc.response.status_code >= 500:
                return None  # Slack's trouble, not an answer: ask again next click
            members = None
        except SlackClientError as exc:
            log.warning("usergroups.users.list %s: %s", group, exc)
            return None  # not cached: a network blip should not stick for ttl
        with self._lock:
            self._cache[group] = (now, members)
        return members

    def check(self, *, user_id: str, repository: str, workspace: str | None = None,
              anyone: bool = False) -> Verdict:
        """May ``user_id`` decide on ``repository``? ``anyone``: any member of the workspace
        may (Cancel: stopping a deletion is always allowed, docs/design.md invariant 2)."""
        expected = self.config["slack.team_id"]
        if expected and workspace != expected:
            return Verdict(False, f"this workspace ({workspace}) is not the one tagwarden "
                                  "serves")
        team = self.config.team_for(repository)
        if team is None:
            return Verdict(False, f"no team owns {repository}; nobody may decide on it")
        if anyone:
            return Verdict(True, "anyone may cancel during the cooling-off", team.name)
        if user_id in team.approvers:
            return Verdict(True, "approver", team.name)
        if team.approver_group:
            members = self.group_members(team.approver_group)
            if members is not None and user_id in members:
                return Verdict(True, f"member of <!subteam^{team.approver_group}>", team.name)
        return Verdict(False, f"<@{user_id}> is not an approver for {repository} "
                              f"(team {team.name})", team.name)
