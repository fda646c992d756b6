"""``make demo``: the whole product on real parts, months of a fleet's history in minutes.

``python -m bot.demo [--quick] [--out data/demo]``; see :func:`run_demo`.
"""

from .run import FULL, QUICK, DemoResult, DemoSize, run_demo
from .services import DemoError
from .slackview import render_markdown

__all__ = ["FULL", "QUICK", "DemoError", "DemoResult", "DemoSize", "render_markdown",
           "run_demo"]
