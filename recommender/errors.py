"""Every error tagwarden raises on purpose.

The tree::

    TagwardenError                 base of everything below; carries ``detail`` data
    ├── ConfigError                a setting is missing, malformed or contradictory
    ├── ReferenceError_            an image reference does not follow the grammar
    ├── PayloadError               an ingested document is malformed (HTTP 4xx, CLI line)
    │   └── PayloadTooLarge        a request body is over the configured limit (HTTP 413)
    ├── StoreError                 the store refused an operation (schema out of date, ...);
    │                              its ``kind`` (:class:`StoreFailure`) says what a retry can do
    ├── RegistryError              a registry answered with an error or could not be reached
    │   ├── AuthError              credentials missing or refused (401/403)
    │   ├── NotFound               MANIFEST_UNKNOWN, NAME_UNKNOWN, BLOB_UNKNOWN (404)
    │   ├── DigestMismatch         a body does not hash to the digest the registry claimed
    │   └── Unsupported            the registry does not allow the operation (UNSUPPORTED, 405)
    ├── ModelError                 no usable model, or a model artifact that does not match
    ├── DecisionError              a decision that is not allowed in the item's current state
    ├── LeaseLost                  this replica no longer holds the scheduler's lease (fencing)
    └── JobBusy                    a job's run is claimed by another runner (replica, CLI)

Foreign exceptions (httpx, SQLAlchemy, json) are translated once, at the edge where they
occur, with ``raise ... from exc``. ``RegistryError.temporary`` says whether a retry may help.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

__all__ = [
    "AuthError",
    "ConfigError",
    "DecisionError",
    "DigestMismatch",
    "JobBusy",
    "LeaseLost",
    "ModelError",
    "NotFound",
    "PayloadError",
    "PayloadTooLarge",
    "ReferenceError_",
    "RegistryError",
    "StoreError",
    "StoreFailure",
    "TagwardenError",
    "Unsupported",
]


class TagwardenError(Exception):
    """Base class. ``detail`` holds machine-readable data about the failure."""

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.message, **{k: v for k, v in self.detail.items() if v is not None}}


class ConfigError(TagwardenError):
    """Raised when a setting is missing, malformed or contradictory (names the setting)."""


class ReferenceError_(TagwardenError):  # noqa: N801 - avoid shadowing the builtin ReferenceError
    """Raised when an image reference does not follow the distribution reference grammar."""


class PayloadError(TagwardenError):
    """Raised when an ingested document is malformed; ``where`` names the offending part."""

    status_code = 400


class PayloadTooLarge(PayloadError):
    """Raised when a request body exceeds ``collector.max_body_bytes``."""

    status_code = 413


class StoreFailure(Enum):
    """What kind of failure a :class:`StoreError` is, decided once where the database's error
    is translated (``recommender.store.failures``)."""

    UNREACHABLE = "unreachable"  # down, locked, connection lost: the same write may pass later
    REFUSED_DATA = "refused data"  # a value of this write refused: retrying it can never pass
    OTHER = "other"


class StoreError(TagwardenError):
    """Raised when the store cannot do what was asked (schema not migrated, bad URL).

    ``kind`` says what a retry can do; ``reason`` is the database's own first line (the
    message when there is none). Neither is in ``detail``: they are not for the client."""

    def __init__(self, message: str, *, kind: StoreFailure = StoreFailure.OTHER,
                 reason: str | None = None, **detail: Any) -> None:
        super().__init__(message, **detail)
        self.kind = kind
        self.reason = message if reason is None else reason


class RegistryError(TagwardenError):
    """Raised when a registry answers with an error or cannot be reached.

    ``status`` is the HTTP status (None when unreachable), ``code`` the OCI error code
    (``MANIFEST_UNKNOWN``...), ``url`` a redacted URL, ``temporary`` whether retrying may help.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        url: str | None = None,
        temporary: bool = False,
        **detail: Any,
    ) -> None:
        super().__init__(message, status=status, code=code, url=url, temporary=temporary, **detail)
        self.status = status
        self.code = code
        self.url = url
        self.temporary = temporary


class AuthError(RegistryError):
    """Raised on 401/403 after the auth flow has run."""


class NotFound(RegistryError):
    """Raised on 404 (MANIFEST_UNKNOWN, NAME_UNKNOWN, BLOB_UNKNOWN)."""


class DigestMismatch(RegistryError):
    """Raised when content does not hash to the digest the registry or the caller claimed."""


class Unsupported(RegistryError):
    """Raised when the registry refuses an operation it does not allow (UNSUPPORTED, 405)."""


class ModelError(TagwardenError):
    """Raised when no usable model exists or an artifact does not match this code."""


class DecisionError(TagwardenError):
    """Raised when a decision is not allowed in an item's current state."""


class LeaseLost(TagwardenError):
    """Raised by a fence check when this replica does not hold the scheduler's lease (any
    more): the job must not start, or must not write. ``owner`` is this replica, ``reason``
    why (its local deadline passed, or the row names another holder)."""


class JobBusy(TagwardenError):
    """Raised when a job cannot run because another runner holds its claim: ``job``,
    ``held_by`` (the runner), ``since`` and ``until`` (the claim's start and expiry)."""
