"""Start real servers on free local ports for end-to-end tests: `emb ui` (`dg dev`: webserver +
daemon), and wait for any server process to answer."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until `url` answers 200; fails at once if `proc` (the server) exits, else at `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            if proc.poll() is not None:
                code = proc.returncode
                raise RuntimeError(f"the server at {url} exited with code {code}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout} s") from None
            time.sleep(0.3)


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    import json

    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        out = json.loads(resp.read())
    if out.get("errors"):
        raise RuntimeError(out["errors"])
    return out["data"]


@contextmanager
def dagster_dev(
    tmp: Path, image_dir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield (base URL, env) of a running `emb ui` (`dg dev`) with its own DAGSTER_HOME and data
    dir; its output is in `tmp / "dagster_dev.log"`.

    The whole process group is stopped afterwards, daemon and code server included.
    """
    home = tmp / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "EMB_DATA_DIR": str(tmp / "data"),
        "EMB_IMAGE_DIR": str(image_dir),
        **(extra_env or {}),
    }
    log = open(tmp / "dagster_dev.log", "w")  # noqa: SIM115 - closed after the server stops
    bin_dir = Path(sys.executable).parent
    proc = subprocess.Popen(
        [str(bin_dir / "emb"), "ui", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_loaded(url, proc, tmp / "dagster_dev.log")
        yield url, env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _wait_until_loaded(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    """Wait for the webserver and for the code location to finish loading."""
    query = """{ workspaceOrError { ... on Workspace { locationEntries {
        name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited early:\n{log.read_text()[-3000:]}")
        try:
            entries = graphql(url, query)["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [
                    e for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"
                ]
                if errors:
                    raise RuntimeError(f"code location failed to load: {errors}")
                return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"dagster dev did not come up:\n{log.read_text()[-3000:]}")


def wait_for_run(url: str, run_id: str, timeout: float = 600) -> str:
    query = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = graphql(url, query, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(2)
    raise TimeoutError(f"run {run_id} did not finish in {timeout} s")
