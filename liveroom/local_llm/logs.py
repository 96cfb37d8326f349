"""What ``bin/local-llm`` tells the user: progress lines, and the one line of a long log that says what failed."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path


def say(msg: str) -> None:
    print(f"local-llm: {msg}", file=sys.stderr, flush=True)


def tail(path: Path, n: int = 65536) -> str:
    """The last ``n`` bytes of ``path`` as text; empty when it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def build_progress(log: Path) -> str:
    """``, build N%`` from CMake's last progress line in ``log``, so a long build shows it moves."""
    steps = re.findall(r"\[\s*(\d+)%\]", tail(log, 8192))
    return f", build {steps[-1]}%" if steps else ""


def last_error(log: Path) -> str:
    """``: LINE`` for the last line of ``log`` that reads like an error, or nothing."""
    lines = [line.strip() for line in tail(log).splitlines() if line.strip()]
    for line in reversed(lines):
        if re.search(r"error|not found|No matching", line, re.I):
            return ": " + line[:300]
    return ""


def one_line(text: str) -> str:
    """The last non-blank line of ``text`` (a process's output), cut to fit one message."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no message)"
