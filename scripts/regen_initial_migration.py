"""Regenerate the initial Alembic migration from ``recommender/store/tables.py``.

Allowed only until the first release: after that, every schema change is a new revision
(`alembic revision --autogenerate`). Run with `make migration`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine

from recommender.store.db import _alembic_config

VERSIONS = Path(__file__).resolve().parents[1] / "recommender/store/migrations/versions"


def main() -> int:
    for old in VERSIONS.glob("*.py"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/empty.db")
        cfg = _alembic_config(engine)
        command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")
    print("\n".join(str(p) for p in sorted(VERSIONS.glob("*.py"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
