"""The engine is generic: importing any of its modules loads no live-room code."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import liveroom.async_client

MODULES = sorted(f"liveroom.async_client.{m.name}" for m in pkgutil.iter_modules(liveroom.async_client.__path__))
ALLOWED = {"liveroom", "liveroom.errors"}


def loaded_by(module: str) -> list[str]:
    """The liveroom modules a fresh interpreter holds after importing ``module``."""
    code = (f"import sys, json, liveroom.async_client, {module}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('liveroom'))))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_the_package_has_its_pieces():
    for piece in ("engine", "run_dir", "manifest", "record", "errors", "transport", "chat", "limits", "policy"):
        assert f"liveroom.async_client.{piece}" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_a_module_loads_only_the_engine(module):
    foreign = [m for m in loaded_by(module) if m not in ALLOWED and not m.startswith("liveroom.async_client")]
    assert foreign == [], f"{module} pulls in {foreign}"
