"""Bolt listeners, one module per surface; each has ``register(app, ctx)``."""

from __future__ import annotations

from slack_bolt import App

from ..context import BotContext
from . import actions, commands, views

__all__ = ["actions", "commands", "register_all", "views"]


def register_all(app: App, ctx: BotContext) -> None:
    for surface in (actions, views, commands):
        surface.register(app, ctx)
