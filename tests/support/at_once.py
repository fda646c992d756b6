"""Two runs of the real CLI released at the same instant, as two processes.

Each process imports the CLI (and ``preload``) first, says it is ready, and waits for a shared
start signal: Python's start-up time alone would mostly keep two processes apart, and the races
under test (two ``migrate``, two ``suggest --post``) need them to meet.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["cli_twice_at_once"]

_RUN_AFTER_SIGNAL = """
import os, sys, time
{preload}
from recommender.cli import main
ready, go = sys.argv[1:3]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
sys.exit(main(sys.argv[3:]))
"""


def cli_twice_at_once(args: Sequence[str], signals: Path, *, preload: Sequence[str] = (),
                      timeout: float = 120) -> list[subprocess.CompletedProcess[str]]:
    """``tagwarden ARGS`` twice at once, from ``signals`` (a directory for the ready and go
    files, also the working directory); ``preload``: modules each imports before it waits."""
    script = _RUN_AFTER_SIGNAL.format(preload="\n".join(f"import {m}" for m in preload))
    ready, go = [signals / f"ready-{n}" for n in range(2)], signals / "go"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(ready[n]), str(go), *args],
                              cwd=signals, env={"PATH": "/usr/bin:/bin"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in range(2)]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready):  # both have imported the CLI
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.touch()
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done
