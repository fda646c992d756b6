"""Image references in Argo CD ``Application`` objects (``argocd app get -o yaml/json``).

``status.summary.images`` lists what the application deploys right now, including rollback
targets kept in Git; ``spec.source(s).kustomize.images`` are overrides it applies
(``[old=]new[:tag][@digest]``).
"""

from __future__ import annotations

from yaml.nodes import Node

from .found import Findings
from .nodes import get, line, scalar, sequence

__all__ = ["is_argo_application", "parse_argo_application"]


def is_argo_application(doc: Node) -> bool:
    api = scalar(get(doc, "apiVersion")) or ""
    return scalar(get(doc, "kind")) == "Application" and api.startswith("argoproj.io/")


def parse_argo_application(doc: Node, found: Findings, path: str) -> None:
    name = scalar(get(doc, "metadata", "name")) or "?"
    owner = f"Application/{name}"
    for node in sequence(get(doc, "status", "summary", "images")):
        image = scalar(node)
        if image is not None:
            found.add(image, f"{path}:{line(node)}", "argo", f"{owner} status.summary.images")
    sources = [get(doc, "spec", "source"), *sequence(get(doc, "spec", "sources"))]
    for source in sources:
        for node in sequence(get(source, "kustomize", "images")):
            override = scalar(node)
            if override is not None:
                image = override.split("=", 1)[1] if "=" in override else override
                found.add(image, f"{path}:{line(node)}", "argo", f"{owner} kustomize image")
