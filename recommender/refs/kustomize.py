"""Image references in a ``kustomization.yaml``: the ``images`` transformer.

``{name, newName, newTag, digest}`` rewrites every container image called ``name``; the
rewritten image is what gets deployed, so that is the reference. An entry that changes
neither tag nor digest (``newName`` alone) still names the repository's ``latest``.
"""

from __future__ import annotations

from yaml.nodes import Node

from .found import Findings
from .nodes import get, line, scalar, sequence

__all__ = ["is_kustomization", "parse_kustomization"]


def is_kustomization(doc: Node, path: str) -> bool:
    kind = scalar(get(doc, "kind"))
    named = path.rsplit("/", 1)[-1] in {"kustomization.yaml", "kustomization.yml",
                                        "Kustomization"}
    return kind in {"Kustomization", "Component"} and (
        "kustomize.config.k8s.io" in (scalar(get(doc, "apiVersion")) or "") or named
    ) or (kind is None and named)


def parse_kustomization(doc: Node, found: Findings, path: str) -> None:
    for entry in sequence(get(doc, "images")):
        name = scalar(get(entry, "name"))
        new_name = scalar(get(entry, "newName")) or name
        tag, digest = scalar(get(entry, "newTag")), scalar(get(entry, "digest"))
        if not new_name or not (tag or digest or new_name != name):
            continue
        image = new_name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
        found.add(image, f"{path}:{line(entry)}", "kustomize", f"images[{name}]")
