"""The database's failures as :class:`StoreError`, with their kind decided here, once.

Callers (the batcher, the writer process) read ``StoreError.kind`` instead of walking the
exception chain for SQLAlchemy's classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DataError, InterfaceError, OperationalError, SQLAlchemyError

from ..errors import StoreError, StoreFailure

__all__ = ["classify", "first_line", "translated"]

# The store itself failing: down, locked, the connection lost. Retrying the same write later
# may succeed; retrying it now, alone, cannot.
_UNREACHABLE = (OperationalError, InterfaceError)
# A value the database refuses: DataError is PostgreSQL's (NUL in text, bigint out of range);
# OverflowError is sqlite3's, for an integer past 64 bits, raised before SQLite sees it.
_REFUSED_DATA = (DataError, OverflowError)


@contextmanager
def translated(action: str = "the store refused the write") -> Iterator[None]:
    """The store's failures inside the block as :class:`StoreError` (one line in the CLI; the
    original stays the ``__cause__``): ``"{action}: {the database's reason}"``."""
    try:
        yield
    except OperationalError as exc:
        kind, reason = classify(exc)
        raise StoreError(f"{action}: {exc.orig}", kind=kind, reason=reason,
                         temporary=True) from exc
    except (SQLAlchemyError, OverflowError) as exc:
        kind, reason = classify(exc)
        raise StoreError(f"{action}: {exc}", kind=kind, reason=reason,
                         temporary=False) from exc


def classify(exc: BaseException) -> tuple[StoreFailure, str]:
    """What ``exc`` says of the store, and the database's reason for it. An error while
    rolling back is chained to the one that made it roll back, so the whole chain counts: the
    store unreachable anywhere in it wins over refused data."""
    if _in_chain(exc, _UNREACHABLE) is not None:
        return StoreFailure.UNREACHABLE, first_line(exc)
    data = _in_chain(exc, _REFUSED_DATA)
    if data is not None:
        return StoreFailure.REFUSED_DATA, first_line(data)
    return StoreFailure.OTHER, first_line(exc)


def _in_chain(exc: BaseException | None, kinds: tuple[type, ...]) -> BaseException | None:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, kinds):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def first_line(exc: BaseException) -> str:
    """The database's own message (SQLAlchemy's ``orig``), first line only."""
    orig = getattr(exc, "orig", None)
    lines = str(orig if orig is not None else exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
