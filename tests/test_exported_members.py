"""Every package declares its public surface, and every name it declares exists."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bot
import recommender

PACKAGES = sorted(
    {m.name for m in pkgutil.walk_packages(recommender.__path__, "recommender.") if m.ispkg
     and ".migrations" not in m.name}
    | {m.name for m in pkgutil.walk_packages(bot.__path__, "bot.") if m.ispkg}
    | {"recommender", "bot"}
)


@pytest.mark.parametrize("name", PACKAGES)
def test_package_exports_exist(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == [], f"{name}.__all__ names what it lacks: {missing}"
    assert len(set(exported)) == len(exported)
