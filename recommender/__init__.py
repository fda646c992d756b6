"""tagwarden's recommender package: everything that is not Slack."""

__version__ = "0.1.0"

__all__ = ["__version__"]
