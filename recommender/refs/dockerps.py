"""Image references of containers on plain Docker hosts: ``docker ps -a --format '{{json .}}'``
(``podman ps -a --format '{{json .}}'`` too).

One JSON object per line. Stopped containers count: ``docker start`` needs their image. The
``Image`` column is what the container was created from; when that image lost its tag Docker
shows an image id instead, which names no repository and is reported as unresolved.

Unlike a checkout walk this is one machine-made document, so it is read strictly: a line that
is not such an object is an error naming the line, and nothing is recorded.
"""

from __future__ import annotations

import re

import orjson

from ..errors import PayloadError
from .found import Findings

__all__ = ["parse_docker_ps"]

_IMAGE_ID = re.compile(r"(?:sha256:)?[0-9a-f]{12}(?:[0-9a-f]{52})?")


def parse_docker_ps(text: str, *, path: str = "docker-ps", findings: Findings | None = None
                    ) -> Findings:
    found = findings if findings is not None else Findings()
    found.files["docker-ps"] += 1
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise PayloadError(f"{where}: not JSON ({exc})", where=where) from exc
        if not isinstance(row, dict):
            raise PayloadError(f"{where}: expected one JSON object per line", where=where)
        image = row.get("Image")
        if not isinstance(image, str) or not image:
            raise PayloadError(f"{where}: no \"Image\" field (use docker ps -a --format "
                               "'{{json .}}')", where=where)
        names = row.get("Names")
        if isinstance(names, list):  # podman ps prints a list of names
            names = ",".join(str(n) for n in names)
        if not isinstance(names, str) or not names:
            names = str(row.get("ID") or "?")
        state = row.get("State") or row.get("Status") or ""
        detail = f"container {names}" + (f" ({state})" if state else "")
        if _IMAGE_ID.fullmatch(image):
            found.note(where, "unresolved", f"{detail} runs image id {image}, which names no "
                       "repository (its tag was removed)")
            continue
        found.add(image, where, "docker-ps", detail)
    return found
