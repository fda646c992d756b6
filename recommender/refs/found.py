"""What the readers produce: declared references with their location, and notes.

Every reader (Dockerfile, Kubernetes YAML, Compose, Argo CD, ``docker ps``) adds to one
:class:`Findings`. A value that still holds a template (``{{ .Values.image }}``, ``${TAG}``)
is reported as *unresolved*, never guessed; a reference that breaks the grammar is *invalid*;
a document or file not read is *skipped*. Notes never stop a walk: real checkouts are messy.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from ..errors import ReferenceError_
from ..reference import Reference, parse_reference

__all__ = ["NOTE_KINDS", "REF_KINDS", "DeclaredRef", "Findings", "Note", "looks_templated"]

REF_KINDS = ("dockerfile", "kubernetes", "compose", "argo", "kustomize", "docker-ps", "api")
NOTE_KINDS = ("unresolved", "invalid", "skipped")

# Helm/Go templates, shell/Compose/envsubst variables, Jinja: values nobody rendered.
_TEMPLATED = re.compile(r"\{\{|\}\}|\$\{|\$[A-Za-z_]|\{%")


def looks_templated(value: str) -> bool:
    return _TEMPLATED.search(value) is not None


@dataclass(frozen=True, slots=True)
class DeclaredRef:
    """One image reference found at ``location`` (``deploy/cron.yaml:14``)."""

    image: str  # as written, after build-arg / interpolation defaults were substituted
    ref: Reference
    location: str
    kind: str  # one of REF_KINDS
    detail: str = ""  # "CronJob/nightly container backup (suspended)"


@dataclass(frozen=True, slots=True)
class Note:
    location: str
    kind: str  # one of NOTE_KINDS
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


@dataclass
class Findings:
    """References and notes gathered from any number of files."""

    refs: list[DeclaredRef] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    files: Counter[str] = field(default_factory=Counter)  # files read, per file kind

    def add(self, image: str, location: str, kind: str, detail: str = "") -> DeclaredRef | None:
        """Record ``image`` if it is a concrete, valid reference; otherwise note why not."""
        image = image.strip()
        if not image:
            self.note(location, "invalid", f"empty image ({detail})" if detail else "empty image")
            return None
        if looks_templated(image):
            self.note(location, "unresolved", f"templated image {image!r} not resolved"
                      + (f" ({detail})" if detail else ""))
            return None
        try:
            ref = parse_reference(image)
        except ReferenceError_ as exc:
            self.note(location, "invalid", f"{exc.message}: {image!r}")
            return None
        found = DeclaredRef(image=image, ref=ref, location=location, kind=kind, detail=detail)
        self.refs.append(found)
        return found

    def note(self, location: str, kind: str, message: str) -> None:
        self.notes.append(Note(location, kind, message))

    def notes_of(self, kind: str) -> list[Note]:
        return [n for n in self.notes if n.kind == kind]

    def extend(self, other: Findings) -> None:
        self.refs.extend(other.refs)
        self.notes.extend(other.notes)
        self.files.update(other.files)
