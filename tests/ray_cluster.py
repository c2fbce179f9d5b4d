"""A real two-node Ray cluster (1 CPU each) for the Ray tests, in a network namespace of its
own where only loopback exists (Ray registers the machine's interface address even when told
127.0.0.1); tests run their drivers inside it with nsenter (`Cluster.run`). Needs root
(unshare -n), as CI runs. Tests get it as the `cluster` fixture (tests/conftest.py)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PORT = 6379  # inside the namespace: nothing outside can clash with it
S3_PORT = 5000  # moto's S3 server, started inside the namespace by the bucket test
# The Ray workers inherit the environment of `ray start`, so the S3 endpoint and credentials are
# set for the whole cluster; the tests that read local files never use them.
S3_ENV = {
    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Ray finds a running cluster through files under its temp dir, not the network: a folder of
# this process's own keeps two suites on one machine (two checkouts, CI beside a session) from
# seeing each other's cluster ("already running at 127.0.0.1:6379"). Short, for Ray's sockets.
RAY_TMPDIR = f"/tmp/ray-{os.getpid()}"
ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ADDRESS": f"127.0.0.1:{PORT}",
    "RAY_TMPDIR": RAY_TMPDIR,
    **S3_ENV,
}
BATCH = 8


class Cluster:
    """Runs commands inside the namespace held by the `unshare` process `holder`."""

    def __init__(self, holder: subprocess.Popen) -> None:
        self.holder = holder

    def run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", *args],
            cwd=REPO,
            env={**os.environ, **ENV},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def skip_reason() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "ray is not installed (pip install -e '.[ray]')"
    if os.geteuid() != 0:
        return "needs root for a network namespace of its own (unshare -n)"
    missing = [tool for tool in ("unshare", "nsenter", "ip") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found"
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        return "unshare -n is not permitted here"
    return None


@contextmanager
def running_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Start the cluster (skip the test when this machine cannot), stop it afterwards: the
    `cluster` fixture of tests/conftest.py, one per test module."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    log = tmp_path_factory.mktemp("ray") / "start.log"
    node = "--node-ip-address=127.0.0.1 --num-cpus=1 --num-gpus=0 --object-store-memory=100000000"
    script = (
        f"ip link set lo up && "
        f"timeout 120 {BIN}/ray start --head --port={PORT} {node} --include-dashboard=false "
        f"--disable-usage-stats >{log} 2>&1 && "
        f"timeout 120 {BIN}/ray start --address=127.0.0.1:{PORT} {node} >>{log} 2>&1 && "
        "echo ready && exec sleep infinity"
    )
    holder = subprocess.Popen(
        ["unshare", "-n", "bash", "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **ENV},
    )
    cluster = Cluster(holder)
    try:
        if holder.stdout.readline().strip() != "ready":
            pytest.fail(f"the Ray cluster did not start:\n{log.read_text()[-3000:]}")
        yield cluster
    finally:
        if holder.poll() is None:
            cluster.run(str(BIN / "ray"), "stop", "--force", timeout=60)
            holder.kill()
        holder.wait()
        shutil.rmtree(RAY_TMPDIR, ignore_errors=True)
