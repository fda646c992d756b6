"""tagwarden's Slack app."""

__all__: list[str] = []
