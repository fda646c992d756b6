"""Declared references: images named in Dockerfiles, manifests, Compose files, Argo CD
Applications and on Docker hosts. Declared images are kept even when nothing runs them."""

from __future__ import annotations

from .dockerfile import parse_dockerfile
from .dockerps import parse_docker_ps
from .found import DeclaredRef, Findings, Note
from .store import (
    ReplaceResult,
    current_references,
    declared_references,
    record,
    replace_source,
)
from .walk import walk
from .yamlfile import parse_yaml

__all__ = [
    "DeclaredRef",
    "Findings",
    "Note",
    "ReplaceResult",
    "current_references",
    "declared_references",
    "parse_docker_ps",
    "parse_dockerfile",
    "parse_yaml",
    "record",
    "replace_source",
    "walk",
]
