"""tagwarden's Slack app.

``create_bolt_app`` builds the Bolt app (listeners in ``bot.listeners``), ``slack_routes`` serves
it at ``/slack/events``; ``post_suggestions`` posts new batches, ``publish_results`` draws the
executor's results, ``post_digest`` sends the weekly digest. Messages are built by the pure
functions of ``bot.blocks``. ``bot.fakeslack`` is the fake Slack Web API of tests and the demo.
"""

from .app import create_bolt_app, default_client, server_parts, slack_routes
from .digest import build_digest, post_digest
from .posting import post_suggestions, publish_results

__all__ = [
    "build_digest",
    "create_bolt_app",
    "default_client",
    "post_digest",
    "post_suggestions",
    "publish_results",
    "server_parts",
    "slack_routes",
]
