"""Walking checkouts: find the files that declare images and hand each to its reader.

Files are recognised by name first (``Dockerfile``, ``*.Dockerfile``, ``Containerfile``,
``*.yaml``/``*.yml``/``*.json``), then by content for files without a suffix (a Dockerfile
under another name starts with ``FROM`` or ``ARG``). Directories nobody declares images in
(``.git``, ``node_modules``, ``vendor``...) are not entered; binary and huge files are not read.
Only the files that can declare images are opened at all, which keeps a 10,000-file checkout
well under the ten seconds the issue allows.

Locations are relative to the directory given (``deploy/cron.yaml:14``), so the same checkout
read on another machine or CI runner yields the same locations and replaces its own set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..errors import PayloadError
from .compose import read_env_file
from .dockerfile import parse_dockerfile
from .found import Findings
from .yamlfile import parse_yaml

__all__ = ["MAX_BYTES", "SKIP_DIRS", "file_kind", "read_file", "walk"]

SKIP_DIRS = frozenset({
    ".git", ".hg", ".svn", "node_modules", "vendor", "__pycache__", ".venv", "venv", ".tox",
    ".terraform", ".idea", ".mypy_cache", ".pytest_cache", ".ruff_cache", "bower_components",
})
MAX_BYTES = 4 * 1024 * 1024
_YAML_SUFFIXES = frozenset({".yaml", ".yml", ".json"})
_DOCKERFILE_START = re.compile(r"(?:[ \t]*(?:#[^\n]*)?\r?\n)*[ \t]*(?:FROM|ARG)[ \t]")
_COMPOSE_ENV = ".env"


def file_kind(name: str) -> str | None:
    """``dockerfile``, ``yaml``, ``sniff`` (no suffix: look inside) or None (not read).

    ``read_file`` also takes ``any``: a file named on the command line, read as a Dockerfile
    when it starts like one and as YAML otherwise.
    """
    lower = name.lower()
    if (lower in {"dockerfile", "containerfile"} or lower.endswith(".dockerfile")
            or lower.startswith(("dockerfile.", "containerfile."))):
        return "dockerfile"
    suffix = os.path.splitext(lower)[1]
    if suffix in _YAML_SUFFIXES:
        return "yaml"
    if not suffix and not name.startswith("."):
        return "sniff"
    return None


def _read_text(path: Path, location: str, found: Findings, max_bytes: int) -> str | None:
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        found.note(location, "skipped", f"cannot read: {exc.strerror or exc}")
        return None
    if len(data) > max_bytes:
        found.note(location, "skipped", f"larger than {max_bytes} bytes, not read")
        found.files["too large"] += 1
        return None
    if b"\x00" in data[:8192]:
        found.files["binary"] += 1
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        found.note(location, "skipped", "not UTF-8 text, not read")
        return None


def read_file(
    path: Path,
    location: str,
    found: Findings,
    *,
    kind: str | None = None,
    build_args: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    max_bytes: int = MAX_BYTES,
) -> None:
    """Read one file whose kind is known or guessable; anything else is counted, not read."""
    kind = kind or file_kind(path.name)
    if kind is None:
        found.files["not read"] += 1
        return
    text = _read_text(path, location, found, max_bytes)
    if text is None:
        return
    if kind in {"sniff", "any"}:
        if _DOCKERFILE_START.match(text):
            kind = "dockerfile"
        elif kind == "any":  # named explicitly: a manifest under an unusual name
            kind = "yaml"
        else:
            found.files["not read"] += 1
            return
    if kind == "dockerfile":
        parse_dockerfile(text, path=location, build_args=build_args, findings=found)
    elif "image" not in text:
        # every YAML reader keys on image/images: without the word there is nothing to find
        found.files["yaml without images"] += 1
    else:
        parse_yaml(text, path=location, env=env, findings=found)


def walk(
    paths: Iterable[str | os.PathLike[str]],
    *,
    build_args: Mapping[str, str] | None = None,
    max_bytes: int = MAX_BYTES,
    findings: Findings | None = None,
) -> Findings:
    """Read every declaring file under ``paths`` (files or directories)."""
    found = findings if findings is not None else Findings()
    for given in paths:
        root = Path(given)
        if root.is_file():
            location = root.as_posix() if not root.is_absolute() else root.name
            read_file(root, location, found, build_args=build_args, env=_env_beside(root.parent),
                      max_bytes=max_bytes, kind=file_kind(root.name) or "any")
            continue
        if not root.is_dir():
            raise PayloadError(f"no such file or directory: {given}", where=str(given))
        def unreadable(exc: OSError, root: Path = root) -> None:
            where = Path(exc.filename or root)
            rel = where.relative_to(root).as_posix() if where.is_relative_to(root) else str(where)
            found.note(rel, "skipped", f"cannot list directory: {exc.strerror or exc}")

        for directory, dirnames, filenames in os.walk(root, onerror=unreadable):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            here = Path(directory)
            rel = here.relative_to(root).as_posix()
            prefix = "" if rel == "." else f"{rel}/"
            env: dict[str, str] | None = None
            if _COMPOSE_ENV in filenames:
                env = _env_beside(here)
            for name in sorted(filenames):
                kind = file_kind(name)
                if kind is None:  # most files of a checkout: decided by name, never opened
                    found.files["not read"] += 1
                    continue
                file = here / name
                if file.is_symlink() and not file.is_file():
                    continue  # dangling link
                read_file(file, prefix + name, found, kind=kind, build_args=build_args, env=env,
                          max_bytes=max_bytes)
    return found


def _env_beside(directory: Path) -> dict[str, str] | None:
    env_file = directory / _COMPOSE_ENV
    try:
        return read_env_file(env_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None
