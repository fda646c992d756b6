"""Comments and docstrings of the package say why, not how fast: figures go stale in code.

Benchmark figures belong in ``bench/`` (the summary in ``bench/README.md``, the runs in
``bench/log.md``). This test tokenizes every module of ``recommender`` and ``bot`` and looks at
comments and docstrings only (code, such as a setting's default, may hold any number).
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("recommender", "bot")

# What a measurement looks like in prose: CPU time, durations below a second, rates, shares,
# memory, "~N" estimates, speed-up factors, and the tools and words that come with them.
FIGURE = re.compile(
    r"""
    \bCPU[- ]s\b
    | \d\s?(?:ms|µs|us|ns)\b
    | \d\.\d+\s?s\b
    | \bms\s(?:per|less|more)\b
    | \b(?:events|tags|requests|GETs?|rows|lines|manifests)\s?/\s?s\b
    | \d\s?%
    | ~\s?\d[\d.]*\s?(?:s|x)\b
    | \b\d+(?:\.\d+)?\s?x\s(?:slower|faster|less|more)\b
    | \d\s?(?:[kMGT]i?B)\b
    | \b(?:RSS|PSS)\b
    | \bmeasured\b
    | \bpy-spy\b
    | \bperf\s(?:trace|record|stat|top)\b
    """,
    re.VERBOSE | re.IGNORECASE,
)



def prose(source: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of every comment and docstring line of ``source``.

    A docstring is a string that is a statement of its own: after a line's start, followed by
    the line's end (module, class and function docstrings, and attribute docstrings).
    """
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    previous = tokenize.NEWLINE
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
        elif tok.type == tokenize.STRING and previous in (tokenize.NEWLINE, tokenize.INDENT,
                                                          tokenize.DEDENT):
            following = next((t for t in tokens[i + 1:]
                              if t.type not in (tokenize.NL, tokenize.COMMENT)), None)
            if following is None or following.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
                for n, line in enumerate(tok.string.splitlines()):
                    yield tok.start[0] + n, line
        if tok.type not in (tokenize.NL, tokenize.COMMENT):
            previous = tok.type


def modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def offending(pattern: re.Pattern[str]) -> list[str]:
    found = []
    for path in modules():
        for line, text in prose(path.read_text(encoding="utf-8")):
            if pattern.search(text):
                found.append(f"{path.relative_to(ROOT)}:{line}: {text.strip()}")
    return found


def test_the_reader_finds_comments_and_docstrings_only() -> None:
    source = '''"""Module docstring 5 ms."""
x = "code 6 ms"  # comment 7 ms
def f():
    """Function docstring 8 ms."""
    return f"{x} 9 ms"
class C:
    y = 1
    """Attribute docstring 10 ms."""
'''
    texts = [text for _, text in prose(source)]
    assert texts == ['"""Module docstring 5 ms."""', "# comment 7 ms",
                     '"""Function docstring 8 ms."""', '"""Attribute docstring 10 ms."""']


@pytest.mark.parametrize("text", [
    "# 14.0-17.9 CPU-s per 1M events", "# ~0.3 ms less CPU per request", "# 22,000 events/s",
    "# ~10 % of the writing process", "# summed PSS 269 MB", "# 4 MiB buffer",
    "# ~5 us each", "# training measured 8x slower", "# waited 0.3 s", "# ~3x the CPU",
    "# py-spy put those layers", "# perf trace -s of the command",
])
def test_the_pattern_knows_a_figure(text: str) -> None:
    assert FIGURE.search(text)


def test_no_benchmark_figures_in_comments_or_docstrings() -> None:
    found = offending(FIGURE)
    assert not found, ("benchmark figures in prose (give the reason; the figures go to "
                       "bench/):\n" + "\n".join(found))



# Files of a sibling checkout that prose once pointed at; the project's own docs are in docs/.
FOREIGN = re.compile(r"\.\./shared|\.\./seed|(?<![\w/])(?:style|design|telemetry|peers|slack)\.md")
OWN_DOC = re.compile(r"\bdocs/[\w.-]+\.md\b")


def test_no_references_to_files_outside_the_repository() -> None:
    found = offending(FOREIGN)
    assert not found, "prose names files this repository does not have:\n" + "\n".join(found)


def test_every_doc_named_in_prose_exists() -> None:
    missing = [f"{place}: {name}" for place in offending(OWN_DOC)
               for name in OWN_DOC.findall(place) if not (ROOT / name).is_file()]
    assert not missing, "prose names docs that do not exist:\n" + "\n".join(missing)
