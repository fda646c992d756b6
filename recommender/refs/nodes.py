"""Small helpers over PyYAML's node graph, which keeps the line of every value.

The readers walk nodes instead of loaded dicts so each reference gets its line number.
libyaml's composer (``CSafeLoader``) is used when present: it is much faster.
"""

from __future__ import annotations

from collections.abc import Iterator

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "Loader",
    "compose_all",
    "get",
    "items",
    "line",
    "mentions",
    "scalar",
    "sequence",
]

Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE = "tag:yaml.org,2002:merge"


def compose_all(text: str) -> Iterator[Node | None]:
    """The documents of ``text`` as node graphs (``None`` for an empty document)."""
    return yaml.compose_all(text, Loader=Loader)  # type: ignore[no-any-return]


def line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _lookup(node: MappingNode, key: str, depth: int = 0) -> Node | None:
    for k, v in node.value:
        if isinstance(k, ScalarNode) and k.value == key and k.tag != _MERGE:
            return v
    # YAML merge keys (``<<: *defaults``), common in Compose files: the composer leaves them
    # unresolved, so look in the merged mappings, nearest first, as the constructor would.
    if depth < 10:
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.tag == _MERGE:
                merged = v.value if isinstance(v, SequenceNode) else [v]
                for m in merged:
                    if isinstance(m, MappingNode):
                        found = _lookup(m, key, depth + 1)
                        if found is not None:
                            return found
    return None


def get(node: Node | None, *keys: str) -> Node | None:
    """Follow mapping keys (``get(doc, "spec", "template")``); None when any is missing."""
    for key in keys:
        if not isinstance(node, MappingNode):
            return None
        node = _lookup(node, key)
    return node


def scalar(node: Node | None) -> str | None:
    """A scalar's text; None for a missing value, ``null``, a mapping or a sequence."""
    if not isinstance(node, ScalarNode) or node.tag == "tag:yaml.org,2002:null":
        return None
    return str(node.value)


def items(node: Node | None) -> Iterator[tuple[str, Node]]:
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if isinstance(key, ScalarNode) and key.tag != _MERGE:
                yield str(key.value), value


def sequence(node: Node | None) -> list[Node]:
    return list(node.value) if isinstance(node, SequenceNode) else []


def mentions(node: Node | None, keys: frozenset[str]) -> bool:
    """True when a mapping key in ``keys`` appears anywhere under ``node``.

    Each node is visited once: aliases share nodes, and a "billion laughs" document in a
    checkout must not make a walk exponential.
    """
    seen: set[int] = set()
    stack = [node] if node is not None else []
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, MappingNode):
            for k, v in current.value:
                if isinstance(k, ScalarNode) and k.value in keys:
                    return True
                stack.append(v)
        elif isinstance(current, SequenceNode):
            stack.extend(current.value)
    return False
