"""tagwarden's Slack app.

``create_bolt_app`` builds the Bolt app (listeners in ``bot.listeners``), ``slack_routes`` serves
it at ``/slack/events`` and ``bot.serving`` starts it in ``tagwarden serve``;
``post_suggestions`` posts new batches, ``publish_results`` draws the executor's results,
``post_digest`` sends the weekly digest. Messages are built by the pure functions of
``bot.blocks``. ``bot.notify.SlackNotifier`` is how recommender reaches all this without
importing ``bot`` (an entry point). ``bot.fakeslack`` is the fake Slack Web API of tests and
the demo.
"""

from .app import create_bolt_app, default_client, slack_routes
from .digest import build_digest, post_digest
from .posting import post_suggestions, publish_results

__all__ = [
    "build_digest",
    "create_bolt_app",
    "default_client",
    "post_digest",
    "post_suggestions",
    "publish_results",
    "slack_routes",
]
