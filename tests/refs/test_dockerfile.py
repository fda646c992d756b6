"""Dockerfile table tests: each case is a Dockerfile and the references (line, image) it holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from recommender.refs import parse_dockerfile
from recommender.refs.dockerfile import expand

FILES = Path(__file__).parent / "files" / "checkout"

CASES = [
    pytest.param("FROM python:3.12-slim\n", {}, [(1, "python:3.12-slim")], [], id="plain"),
    pytest.param(
        "ARG BASE=python:3.12\nFROM ${BASE}\n", {}, [(2, "python:3.12")], [], id="arg-default"),
    pytest.param(
        "ARG BASE=python:3.12\nFROM $BASE\n", {"BASE": "python:3.13"}, [(2, "python:3.13")], [],
        id="build-arg-overrides-default"),
    pytest.param(
        "ARG V\nFROM golang:${V:-1.22}-alpine\n", {}, [(2, "golang:1.22-alpine")], [],
        id="colon-dash-default"),
    pytest.param(
        "ARG V=\nFROM golang:${V-1.22}\n", {}, [], ["invalid"], id="dash-default-keeps-empty"),
    pytest.param(
        "ARG SUFFIX=x\nFROM app${SUFFIX:+-slim}:1\n", {}, [(2, "app-slim:1")], [],
        id="colon-plus-alt"),
    pytest.param("FROM ${NOPE}\n", {}, [], ["unresolved"], id="undeclared-arg-unresolved"),
    pytest.param(
        "FROM golang:1.22 AS build\nFROM build\nFROM BUILD AS again\nFROM scratch\n", {},
        [(1, "golang:1.22")], [], id="stage-names-and-scratch-are-not-images"),
    pytest.param(
        "FROM --platform=$BUILDPLATFORM node:20 AS web\n", {}, [(1, "node:20")], [],
        id="platform-flag"),
    pytest.param(
        "FROM alpine:3.19\nCOPY --from=0 /a /a\nCOPY --from=nginx:1.25 /etc/nginx /etc/nginx\n",
        {}, [(1, "alpine:3.19"), (3, "nginx:1.25")], [], id="copy-from-index-and-image"),
    pytest.param(
        "FROM alpine AS a\nARG TOOL=ghcr.io/org/tool:2\nCOPY --from=${TOOL} /t /t\n", {},
        [(1, "alpine"), (3, "ghcr.io/org/tool:2")], [], id="stage-arg-in-copy-from"),
    pytest.param(
        "FROM \\\n  registry.example.com/base:1 \\\n  AS base\n", {},
        [(1, "registry.example.com/base:1")], [], id="line-continuation"),
    pytest.param(
        "# escape=`\nFROM mcr.microsoft.com/windows/servercore:ltsc2022 `\n  AS win\n", {},
        [(2, "mcr.microsoft.com/windows/servercore:ltsc2022")], [], id="escape-directive"),
    pytest.param(
        "# syntax=docker/dockerfile:1\nFROM alpine\n", {},
        [(1, "docker/dockerfile:1"), (2, "alpine")], [], id="syntax-directive"),
    pytest.param(
        "FROM alpine\n# syntax=ignored/after:start\n", {}, [(1, "alpine")], [],
        id="directive-only-at-top"),
    pytest.param(
        "from alpine:3 as Base\nfrom base\n", {}, [(1, "alpine:3")], [],
        id="lowercase-instructions"),
    pytest.param(
        "FROM alpine\nRUN <<EOT\nFROM evil:1\nEOT\nCOPY <<-EOF /x\n\tFROM evil:2\n\tEOF\n"
        "FROM busybox\n", {}, [(1, "alpine"), (8, "busybox")], [], id="heredocs-skipped"),
    pytest.param(
        "FROM alpine\nRUN --mount=type=bind,from=ghcr.io/org/assets:1,target=/a \\\n"
        "    --mount=type=cache,target=/c make\n", {},
        [(1, "alpine"), (2, "ghcr.io/org/assets:1")], [], id="run-mount-from"),
    pytest.param(
        "FROM alpine\nRUN echo \\\n# comment inside a continuation\n\n  done\nFROM busybox\n",
        {}, [(1, "alpine"), (6, "busybox")], [], id="comments-in-continuations"),
    pytest.param("FROM Alpine\n", {}, [], ["invalid"], id="uppercase-repository-invalid"),
    pytest.param(
        "ARG A=1 B=\"x\"\nFROM img:${A}-${B}\n", {}, [(2, "img:1-x")], [], id="several-args"),
    pytest.param(
        "ARG REG=reg.local:5000\nFROM alpine AS a\nFROM ${REG}/team/app:1\n", {},
        [(2, "alpine"), (3, "reg.local:5000/team/app:1")], [], id="global-arg-in-later-from"),
]


@pytest.mark.parametrize(("text", "build_args", "refs", "notes"), CASES)
def test_dockerfile(text: str, build_args: dict[str, str], refs: list[tuple[int, str]],
                    notes: list[str]) -> None:
    found = parse_dockerfile(text, path="Dockerfile", build_args=build_args)
    assert [(int(r.location.split(":")[-1]), r.image) for r in found.refs] == refs
    assert [n.kind for n in found.notes] == notes
    assert all(r.kind == "dockerfile" for r in found.refs)


def test_real_world_multistage_dockerfile() -> None:
    text = (FILES / "services/api/Dockerfile").read_text()
    found = parse_dockerfile(text, path="services/api/Dockerfile")
    assert [(r.location, r.image) for r in found.refs] == [
        ("services/api/Dockerfile:1", "docker/dockerfile:1.7"),
        ("services/api/Dockerfile:9", "registry.example.com/base/python:3.12-slim"),
        ("services/api/Dockerfile:16", "registry.example.com/tools/protoc:25.1"),
        ("services/api/Dockerfile:26", "gcr.io/distroless/python3-debian12:nonroot"),
    ]
    assert found.refs[1].detail == "FROM (stage builder) --platform=$BUILDPLATFORM"
    assert found.notes == []


def test_build_args_reach_the_real_file() -> None:
    text = (FILES / "services/api/Dockerfile").read_text()
    found = parse_dockerfile(text, build_args={"PYTHON_VERSION": "3.11"})
    assert "registry.example.com/base/python:3.11-slim" in [r.image for r in found.refs]


def test_worker_dockerfile_reports_what_it_cannot_resolve() -> None:
    text = (FILES / "services/worker/worker.Dockerfile").read_text()
    found = parse_dockerfile(text, path="worker.Dockerfile")
    assert [r.image for r in found.refs] == [
        "golang:1.22-bookworm",
        "registry.example.com/team/shared-assets:2024.05",
        "alpine:3.19",
        "registry.example.com/team/migrations@sha256:"
        "4d7e4f0b8e2a8c1f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f",
    ]
    [note] = found.notes
    assert note.kind == "unresolved" and note.location == "worker.Dockerfile:14"
    assert "UNSET_BASE" in note.message


@pytest.mark.parametrize(
    ("text", "values", "expected", "missing"),
    [
        ("${A}", {"A": "x"}, "x", []),
        ("$A/$B", {"A": "x", "B": "y"}, "x/y", []),
        ("${A:-d}", {"A": ""}, "d", []),
        ("${A-d}", {"A": ""}, "", []),
        ("${A-d}", {}, "d", []),
        ("${A:+alt}", {"A": "v"}, "alt", []),
        ("${A:+alt}", {"A": None}, "", []),
        ("${A}", {"A": None}, "${A}", ["A"]),
        ("${A:-${B}}", {"B": "b"}, "b", []),
        ("no vars", {}, "no vars", []),
    ],
)
def test_expand(text: str, values: dict[str, str | None], expected: str,
                missing: list[str]) -> None:
    assert expand(text, values) == (expected, missing)
