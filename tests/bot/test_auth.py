"""Authorization at click time: the allow-list, the user group (cached briefly), the workspace."""

from __future__ import annotations

from pathlib import Path

from slack_sdk import WebClient

from bot.app import create_bolt_app, start_socket_mode
from bot.auth import Authorizer
from recommender import decisions
from recommender.store import Store
from tests.support.fake_slack import FakeSlack

from .helpers import TOKEN, WORKSPACE, Clock, Suggestion, click_payload, digest, make_config


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _authorizer(fake: FakeSlack, tmp_path: Path, ticks: Ticks, **kwargs: object) -> Authorizer:
    config = make_config(tmp_path, fake.api_url, **kwargs)  # type: ignore[arg-type]
    return Authorizer(config, WebClient(token=TOKEN, base_url=fake.api_url), ttl=60,
                      monotonic=ticks)


def test_allow_list_and_workspace(fake_slack: FakeSlack, tmp_path: Path) -> None:
    auth = _authorizer(fake_slack, tmp_path, Ticks())
    assert auth.check(user_id="U0ALICE", repository="payments/api", workspace=WORKSPACE)
    refused = auth.check(user_id="U0MALLORY", repository="payments/api", workspace=WORKSPACE)
    assert not refused and "not an approver for payments/api" in refused.reason
    elsewhere = auth.check(user_id="U0ALICE", repository="payments/api", workspace="T0OTHER")
    assert not elsewhere and "workspace" in elsewhere.reason
    orphan = auth.check(user_id="U0ALICE", repository="search/api", workspace=WORKSPACE)
    assert not orphan and "no team owns search/api" in orphan.reason
    assert not fake_slack.calls("usergroups.users.list")  # no group configured


def test_group_membership_is_cached_then_reread(fake_slack: FakeSlack, tmp_path: Path) -> None:
    ticks = Ticks()
    auth = _authorizer(fake_slack, tmp_path, ticks, approvers=(),
                       approver_group="S0PAYAPPROVERS")
    assert auth.check(user_id="U0CAROL", repository="payments/api", workspace=WORKSPACE)
    fake_slack.usergroups["S0PAYAPPROVERS"] = []  # Carol leaves the group
    ticks.now = 30
    assert auth.check(user_id="U0CAROL", repository="payments/api", workspace=WORKSPACE)
    assert len(fake_slack.calls("usergroups.users.list")) == 1
    ticks.now = 61
    assert not auth.check(user_id="U0CAROL", repository="payments/api", workspace=WORKSPACE)
    assert len(fake_slack.calls("usergroups.users.list")) == 2


def test_group_lookup_failure_falls_back_to_the_allow_list(fake_slack: FakeSlack,
                                                           tmp_path: Path) -> None:
    auth = _authorizer(fake_slack, tmp_path, Ticks(), approvers=("U0ALICE",),
                       approver_group="S0NOSUCHGROUP")  # free plan: no_such_subteam/paid_only
    assert auth.check(user_id="U0ALICE", repository="payments/api", workspace=WORKSPACE)
    assert not auth.check(user_id="U0CAROL", repository="payments/api", workspace=WORKSPACE)
    fake_slack.fail("usergroups.users.list", 500, times=5)
    auth2 = _authorizer(fake_slack, tmp_path, Ticks(), approvers=(),
                        approver_group="S0PAYAPPROVERS")
    assert not auth2.check(user_id="U0CAROL", repository="payments/api", workspace=WORKSPACE)


def test_socket_mode_approves_without_a_public_url(store: Store, fake_slack: FakeSlack,
                                                   tmp_path: Path) -> None:
    fake_slack.enable_socket_mode()
    config = make_config(tmp_path, fake_slack.api_url).replace(slack__app_token="xapp-1-test")
    clock = Clock()
    bolt = create_bolt_app(config, store, clock=clock, socket_mode=True)
    [batch] = decisions.record_batches(store, [Suggestion("payments/api", digest(1))],
                                       now=clock(), config=config)
    decisions.set_posted(store, batch_id=batch.id, channel="C0PAYMENTS", ts="1.000100",
                         now=clock())
    handler = start_socket_mode(bolt, config)
    try:
        assert fake_slack.calls("apps.connections.open")[0].headers["Authorization"] == \
            "Bearer xapp-1-test"
        fake_slack.socket_send({"envelope_id": "env-1", "type": "interactive",
                                "accepts_response_payload": False, "retry_attempt": 0,
                                "payload": click_payload("tw_approve", batch.id)})
        [update] = fake_slack.wait_for("chat.update")
        assert update.args["ts"] == "1.000100"
        assert {"envelope_id": "env-1"} in fake_slack.socket_received  # acknowledged
        assert decisions.get_batch(store, batch.id).state == "approved"
    finally:
        handler.close()
