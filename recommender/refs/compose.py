"""Image references in Compose files: ``services.<name>.image``.

Compose interpolates ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:+alt}`` and
``$VAR`` from the environment and the project's ``.env`` file; ``$$`` is a literal dollar.
Only ``.env`` values and written defaults are used here (the walking machine's environment is
not the deploying one); anything else is reported as unresolved.
"""

from __future__ import annotations

from collections.abc import Mapping

from yaml.nodes import Node

from .dockerfile import expand
from .found import Findings
from .nodes import get, items, line, scalar

__all__ = ["is_compose", "parse_compose_document", "read_env_file"]


def is_compose(doc: Node) -> bool:
    """A Compose document: a ``services`` mapping and no Kubernetes ``kind``."""
    return get(doc, "kind") is None and any(True for _ in items(get(doc, "services")))


def read_env_file(text: str) -> dict[str, str]:
    """``KEY=value`` lines of a Compose ``.env`` file (comments, quotes, ``export`` allowed)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        entry = raw.strip()
        if not entry or entry.startswith("#") or "=" not in entry:
            continue
        key, _, value = entry.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key.strip()] = value
    return values


def parse_compose_document(
    doc: Node, found: Findings, path: str, env: Mapping[str, str] | None = None
) -> None:
    values: dict[str, str | None] = dict(env or {})
    for service, body in items(get(doc, "services")):
        image_node = get(body, "image")
        image = scalar(image_node)
        if image_node is None or image is None:
            continue  # a service built locally without a name pulls nothing
        where = f"{path}:{line(image_node)}"
        placeholder = "\x00"  # keeps $$ literal through expansion
        expanded, missing = expand(image.replace("$$", placeholder), values)
        if missing:
            found.note(where, "unresolved",
                       f"service {service}: {image!r} needs variable {', '.join(missing)}")
            continue
        found.add(expanded.replace(placeholder, "$"), where, "compose", f"service {service}")
