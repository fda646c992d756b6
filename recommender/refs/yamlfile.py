"""One YAML (or JSON) file: each document goes to the reader of its kind.

Kubernetes objects (``apiVersion`` + ``kind``), Argo CD Applications, kustomizations and
Compose files can share a directory and even a file. A document of none of these kinds (Helm
values, CI configuration) is not a declaration and is passed over silently; a file that is not
valid YAML is skipped with a note, naming an unrendered template as such.
"""

from __future__ import annotations

from collections.abc import Mapping

import yaml

from .argo import is_argo_application, parse_argo_application
from .compose import is_compose, parse_compose_document
from .found import Findings, looks_templated
from .kube import parse_kube_object, skipped_note
from .kustomize import is_kustomization, parse_kustomization
from .nodes import compose_all, get

__all__ = ["parse_yaml"]


def parse_yaml(
    text: str,
    *,
    path: str,
    env: Mapping[str, str] | None = None,
    findings: Findings | None = None,
) -> Findings:
    """Read every document of a YAML stream; ``env`` holds the Compose ``.env`` values."""
    found = findings if findings is not None else Findings()
    try:
        docs = list(compose_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{path}:{mark.line + 1}" if mark is not None else path
        if looks_templated(text):
            found.note(at, "skipped", "unrendered template, not valid YAML "
                       "(render it with helm template or kustomize build first)")
        else:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            found.note(at, "skipped", f"not valid YAML: {problem}")
        found.files["unreadable"] += 1
        return found
    kinds: set[str] = set()
    for doc in docs:
        if doc is None:
            continue
        if is_argo_application(doc):
            kinds.add("argo")
            parse_argo_application(doc, found, path)
        elif is_kustomization(doc, path):
            kinds.add("kustomize")
            parse_kustomization(doc, found, path)
        elif get(doc, "apiVersion") is not None and get(doc, "kind") is not None:
            kinds.add("kubernetes")
            if not parse_kube_object(doc, found, path):
                skipped_note(doc, found, path)
        elif is_compose(doc):
            kinds.add("compose")
            parse_compose_document(doc, found, path, env)
    for kind in kinds or {"other yaml"}:
        found.files[kind] += 1
    return found
