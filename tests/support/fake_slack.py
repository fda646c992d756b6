"""Re-export: the fake Slack Web API lives in the package (``bot.fakeslack``) so that
``make demo`` can run it too."""

from bot.fakeslack import FakeSlack, Recorded

__all__ = ["FakeSlack", "Recorded"]
