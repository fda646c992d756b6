"""Property tests: messy input never crashes a reader; it becomes references or notes.

Checkouts hold anything. A walk must never stop on a file it does not understand, and every
reference it reports must be one the strict grammar accepts.
"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from recommender.errors import ReferenceError_
from recommender.reference import parse_reference
from recommender.refs import parse_dockerfile, parse_yaml

_WORDS = st.sampled_from([
    "FROM", "ARG", "COPY", "RUN", "AS", "--from=", "--platform=linux/amd64", "${X}", "$X",
    "${X:-alpine}", "X=", "x", "alpine:3", "reg.local:5000/a/b:1", "\\", "\n", " ", "#",
    "<<EOF", "EOF", "scratch", "0", "@sha256:" + "a" * 64, "--mount=type=bind,from=",
    "# syntax=", "# escape=`", "`",
])
_YAML = st.sampled_from([
    "apiVersion: v1\n", "kind: Pod\n", "kind: List\n", "kind: CronJob\n", "items:\n",
    "spec:\n", "  containers:\n", "  - image: nginx\n", "    image: {{ .Values.x }}\n",
    "image: ", "services:\n", "  web:\n", "    image: ${TAG:-a}\n", "---\n", "&a ", "*a\n",
    "<<: *a\n", "- ", "[", "]", "{", "}", ": ", "\t", "'", '"', "\n", "null\n", "images:\n",
    "status:\n  summary:\n    images:\n      - x:1\n", "apiVersion: argoproj.io/v1alpha1\n",
])


def _all_valid(found) -> bool:  # type: ignore[no-untyped-def]
    for ref in found.refs:
        try:
            parse_reference(ref.image)
        except ReferenceError_:
            return False
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_WORDS, max_size=40).map(" ".join) | st.text(max_size=300))
@example("\\ \n \\")  # continuations of nothing: once an IndexError
def test_dockerfile_reader_never_crashes(text: str) -> None:
    found = parse_dockerfile(text, path="Dockerfile")
    assert _all_valid(found)
    assert all(r.location.startswith("Dockerfile:") for r in found.refs)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_YAML, max_size=40).map("".join) | st.text(max_size=300))
def test_yaml_reader_never_crashes(text: str) -> None:
    found = parse_yaml(text, path="x.yaml")
    assert _all_valid(found)


def test_alias_bombs_do_not_explode() -> None:
    lines = ["apiVersion: example.com/v1", "kind: Bomb", "metadata: {name: lol}",
             "spec:", "  image: x", "  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 30):
        lines.append(f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines.append("  last: [" + ", ".join(["*a29"] * 9) + "]")
    lines[4] = "  zzz: 1"  # no image key at all: the search must visit every node once
    lines.append("  image2: no")
    found = parse_yaml("\n".join(lines) + "\nimage_note: here\n", path="bomb.yaml")
    assert found.refs == [] and found.notes == []
