"""One direction between the two packages: ``bot`` builds on ``recommender``, never the reverse.

``recommender`` reaches the Slack bot only through ``recommender.notify`` (an entry point), so
every one of its modules imports with ``bot`` unimportable, and none names it in an import.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import recommender

ROOT = Path(recommender.__file__).parent

# Run in a fresh interpreter: a meta-path finder refuses ``bot`` before anything is imported,
# then every module of recommender is imported (``__main__`` modules run a command: skipped).
IMPORT_ALL = r"""
import importlib, importlib.abc, pkgutil, sys

class RefuseBot(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "bot" or name.startswith("bot."):
            raise ImportError(f"recommender must not import {name}")
        return None

sys.meta_path.insert(0, RefuseBot())
import recommender
names = ["recommender"] + [m.name for m in pkgutil.walk_packages(recommender.__path__,
                                                                    "recommender.")
                           if not m.name.endswith(".__main__")]
for name in names:
    importlib.import_module(name)
assert not [m for m in sys.modules if m == "bot" or m.startswith("bot.")]
print(len(names))
"""


def test_every_recommender_module_imports_without_bot() -> None:
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr
    modules = int(done.stdout.split()[-1])
    sources = [p for p in ROOT.rglob("*.py") if "migrations" not in p.parts
               and p.name != "__main__.py"]
    assert modules == len(sources)  # every module was imported, none skipped by the walk


def test_no_recommender_source_imports_bot() -> None:
    pattern = re.compile(r"^\s*(import\s+bot\b|from\s+bot\b)|import_module\(\s*[\"']bot\b",
                         re.MULTILINE)
    found = [f"{path.relative_to(ROOT.parent)}:{text[:m.start()].count(chr(10)) + 1}"
             for path in sorted(ROOT.rglob("*.py"))
             for text in [path.read_text(encoding="utf-8")]
             for m in pattern.finditer(text)]
    assert found == []
