"""Image references in a Dockerfile: every base image and every image a build copies from.

Follows BuildKit's Dockerfile frontend where it matters for references:

1. Parser directives (``# syntax=``, ``# escape=``) are only read before anything else; the
   ``syntax`` frontend is itself an image the build pulls.
2. Lines join on the escape character (``\\`` or the ``escape`` directive's); comment lines
   inside a continuation are dropped; here-documents (``RUN <<EOF``) are skipped whole, so a
   ``FROM`` inside a script is not mistaken for an instruction.
3. ``ARG`` before the first ``FROM`` declares global build arguments usable in ``FROM``; an
   ``ARG`` inside a stage is usable by that stage's later instructions (``COPY --from``).
   ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}`` and ``${VAR:+alt}`` expand;
   a variable without a value is reported as unresolved, never guessed.
4. ``FROM <stage>`` and ``COPY --from=<stage or index>`` refer to earlier stages, not images;
   ``scratch`` is no image either. ``RUN --mount=...,from=<image>`` is an image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .found import Findings

__all__ = ["expand", "parse_dockerfile"]

_DIRECTIVE = re.compile(r"#\s*([A-Za-z]+)\s*=\s*(\S.*?)\s*$")
_HEREDOC = re.compile(r"<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")
_VAR = re.compile(
    # the word of ${VAR:-word} may itself hold one level of ${OTHER}
    r"\$(?:\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(?P<op>:?[-+])(?P<word>(?:[^{}$]|\$\{[^{}]*\}|\$(?!\{))*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
_ARG_PAIR = re.compile(r"""([A-Za-z_][A-Za-z0-9_]*)(?:=("[^"]*"|'[^']*'|\S*))?""")


def expand(text: str, values: Mapping[str, str | None]) -> tuple[str, list[str]]:
    """Expand build-argument references; return the text and the names that had no value."""
    missing: list[str] = []

    def one(match: re.Match[str]) -> str:
        name = match.group("name") or match.group("bare")
        op, word = match.group("op"), match.group("word") or ""
        value = values.get(name)
        declared = name in values
        if op == ":-":
            return value if value else expand(word, values)[0]
        if op == "-":
            return value if value is not None else expand(word, values)[0]
        if op in (":+", "+"):
            set_ = bool(value) if op == ":+" else declared and value is not None
            return expand(word, values)[0] if set_ else ""
        if value is None:
            missing.append(name)
            return match.group(0)
        return value

    return _VAR.sub(one, text), missing


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _logical_lines(lines: list[str], escape: str, start: int) -> list[tuple[int, str]]:
    """Join continuations, drop comments, skip here-document bodies: (line number, text)."""
    out: list[tuple[int, str]] = []
    i = start
    while i < len(lines):
        raw = lines[i]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        number, parts = i + 1, []
        while True:
            text = lines[i].rstrip()
            if text.endswith(escape) and not text.endswith(escape * 2):
                parts.append(text[: -len(escape)])
                i += 1
                # comment and blank lines inside a continuation are dropped, not ends
                while i < len(lines) and lines[i].strip()[:1] in {"", "#"}:
                    i += 1
                if i >= len(lines):
                    break
                continue
            parts.append(text)
            i += 1
            break
        line = " ".join(p.strip() for p in parts).strip()
        if not line:  # continuations of nothing: no instruction
            continue
        out.append((number, line))
        keyword = line.split(None, 1)[0].upper()
        if keyword in {"RUN", "COPY", "ADD"}:
            for match in _HEREDOC.finditer(line):
                strip_tabs, word = match.group(1) == "-", match.group(3)
                while i < len(lines):
                    body = lines[i].lstrip("\t") if strip_tabs else lines[i]
                    i += 1
                    if body.rstrip("\r\n") == word:
                        break
    return out


def _flags(words: list[str]) -> tuple[dict[str, str], list[str]]:
    flags: dict[str, str] = {}
    rest = list(words)
    while rest and rest[0].startswith("--"):
        name, _, value = rest.pop(0)[2:].partition("=")
        flags.setdefault(name.lower(), _unquote(value))
        if name.lower() == "mount":  # several --mount flags are allowed
            flags[f"mount:{len(flags)}"] = _unquote(value)
    return flags, rest


def parse_dockerfile(
    text: str,
    *,
    path: str = "Dockerfile",
    build_args: Mapping[str, str] | None = None,
    findings: Findings | None = None,
) -> Findings:
    """Read the references of one Dockerfile; ``build_args`` act like ``--build-arg``."""
    found = findings if findings is not None else Findings()
    found.files["dockerfile"] += 1
    overrides = dict(build_args or {})
    lines = text.splitlines()
    escape, start = "\\", 0
    # 1. parser directives: only at the very top, stop at the first other line
    for start, raw in enumerate(lines):  # noqa: B007 - start is used after the loop
        match = _DIRECTIVE.fullmatch(raw.strip())
        if not match:
            break
        name, value = match.group(1).lower(), match.group(2)
        if name == "escape" and value in {"\\", "`"}:
            escape = value
        elif name == "syntax":
            found.add(value, f"{path}:{start + 1}", "dockerfile", "syntax directive (frontend)")
    else:
        start = len(lines)

    global_args: dict[str, str | None] = {}
    stage_args: dict[str, str | None] | None = None
    stages: list[str] = []  # stage names, lower case ("" when unnamed), index = stage number

    def where(number: int) -> str:
        return f"{path}:{number}"

    def image_or_stage(value: str, number: int, detail: str) -> None:
        scope = {**global_args, **(stage_args or {})}
        image, missing = expand(value, scope)
        if missing:
            found.note(where(number), "unresolved",
                       f"{detail}: {value!r} needs build argument {', '.join(missing)}")
            return
        lowered = image.lower()
        if lowered in stages or (lowered.isdigit() and int(lowered) < len(stages)):
            return  # an earlier build stage, not an image
        if lowered == "scratch":
            return
        found.add(image, where(number), "dockerfile", detail)

    for number, line in _logical_lines(lines, escape, start):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        words = rest.split()
        if keyword == "ARG":
            target = global_args if stage_args is None else stage_args
            for match in _ARG_PAIR.finditer(rest):
                name, value = match.group(1), match.group(2)
                if name in overrides:
                    target[name] = overrides[name]
                elif value is not None:
                    scope = {**global_args, **(stage_args or {})}
                    target[name] = expand(_unquote(value), scope)[0]
                elif stage_args is not None:
                    # a global ARG re-declared without a value inherits the global default
                    target[name] = global_args.get(name)
                else:
                    target[name] = None
        elif keyword == "FROM":
            flags, args = _flags(words)
            if not args:
                found.note(where(number), "invalid", "FROM without an image")
                continue
            alias = args[2].lower() if len(args) >= 3 and args[1].upper() == "AS" else ""
            detail = f"FROM (stage {alias})" if alias else f"FROM (stage {len(stages)})"
            if "platform" in flags:
                detail += f" --platform={flags['platform']}"
            stage_args = None  # FROM sees only global arguments
            image_or_stage(args[0], number, detail)
            stages.append(alias)
            stage_args = {}
        elif keyword in {"COPY", "RUN"}:
            flags, _ = _flags(words)
            if keyword == "COPY" and "from" in flags:
                image_or_stage(flags["from"], number, "COPY --from")
            for key, mount in flags.items():
                if key.startswith("mount:"):
                    options = dict(part.partition("=")[::2] for part in mount.split(","))
                    if options.get("from"):
                        image_or_stage(options["from"], number, "RUN --mount from")
    return found
