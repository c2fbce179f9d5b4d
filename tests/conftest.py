"""Shared fixtures: an isolated data directory per test, real image files to scan, and the
servers several test modules share (moto's S3 server, a Ray cluster)."""

from __future__ import annotations

import inspect
import os

if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    # `scripts/test.sh` runs two workers on (typically) two cores: one compute thread each,
    # for the worker and the processes it starts, rather than four threads fighting for two.
    # Set before numpy and torch load, as they read it once.
    os.environ["OMP_NUM_THREADS"] = "1"
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import tiers
from tests.dagster_server import free_port
from tests.helpers import SHARED_CIFAR, write_image
from tests.ray_cluster import running_cluster


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data directory, also exported as EMB_DATA_DIR for code that reads the env."""
    root = tmp_path / "data"
    monkeypatch.setenv("EMB_DATA_DIR", str(root))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    return root


@pytest.fixture
def labeled_folder(tmp_path: Path) -> Path:
    """Three classes of distinguishable images (dark/mid/bright), 8 each, plus unlabeled ones."""
    root = tmp_path / "images"
    for c, level in enumerate((30, 128, 220)):
        for i in range(8):
            rng = np.random.default_rng(c * 100 + i)
            arr = np.clip(rng.normal(level, 20, size=(24, 24, 3)), 0, 255).astype(np.uint8)
            path = root / f"class_{c}" / f"img_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)
    for i in range(4):
        write_image(root / "unlabeled" / f"u_{i}.png", size=(24, 24), seed=1000 + i)
    return root


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server, a real HTTP endpoint on 127.0.0.1, one per test module."""
    moto_server = pytest.importorskip("moto.server", reason="pip install 'moto[server]'")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A two-node Ray cluster on loopback in a network namespace of its own, per test module
    (tests/ray_cluster.py); skipped where this machine cannot make one."""
    with running_cluster(tmp_path_factory) as found:
        yield found


@pytest.fixture
def cifar_dir() -> Path:
    if not SHARED_CIFAR.is_dir():
        pytest.skip("../shared/data/cifar10/test is absent (a fresh clone has no ../shared)")
    return SHARED_CIFAR


def _own_functions(item: pytest.Item) -> list[tuple[str, str]]:
    """(file, top-level name) of the test and of every fixture it uses, where they live in
    the tests package (pytest's own fixtures are light and left out)."""
    here = Path(__file__).parent
    funcs = [item.function] if isinstance(item, pytest.Function) else []
    info = getattr(item, "_fixtureinfo", None)
    for name in getattr(item, "fixturenames", ()):
        for fixturedef in info.name2fixturedefs.get(name, ()) if info else ():
            funcs.append(fixturedef.func)
    out = []
    for func in funcs:
        func = inspect.unwrap(func)
        source = inspect.getsourcefile(func)
        if source and Path(source).resolve().is_relative_to(here):
            out.append((source, func.__qualname__.split(".")[0]))
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test unit, integration or e2e by what it uses (tests/tiers.py), so that
    `-m unit` is the quick loop and a new test needs no marker to land in its tier."""
    tier_of: dict[str, str] = {}
    for item in items:
        tier = tiers.tier_of(_own_functions(item))
        for explicit in tiers.TIERS:
            if item.get_closest_marker(explicit):
                tier = tiers.heavier(tier, explicit)
        item.add_marker(tier)
        tier_of[item.nodeid] = tier
    # The files of the heaviest tier first, each file's tests in their own order (some
    # module-scoped worlds depend on it): on several workers the long end-to-end files start
    # early instead of running alone at the end.
    heaviest: dict[Path, int] = {}
    for item in items:
        rank = tiers.TIERS.index(tier_of[item.nodeid])
        heaviest[item.path] = max(rank, heaviest.get(item.path, 0))
    items.sort(key=lambda item: -heaviest[item.path])


@pytest.fixture(autouse=True)
def unit_tier_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """In the unit tier, starting a Dagster run or listening on a socket fails the test and
    says why: tiers.py did not see it coming, so the test needs a marker or a fixture."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    import socket

    from dagster import DagsterInstance

    def refuse(what: str):
        def guard(*args, **kwargs):
            raise tiers.TierError(
                f"{request.node.nodeid} is in the unit tier but {what}: mark it "
                "@pytest.mark.integration (or e2e), or teach tests/tiers.py the call it makes"
            )

        return guard

    monkeypatch.setattr(DagsterInstance, "create_run", refuse("starts a Dagster run"))
    monkeypatch.setattr(socket.socket, "listen", refuse("listens on a socket (a server)"))
    yield


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the process once pytest has reported, with its exit status: a native thread pool
    (seen after the search-service tests) can abort the interpreter's own shutdown with
    "terminate called ... exception not rethrown", turning a passed run into exit code 134."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(getattr(config, "_exit_status", 0)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config._exit_status = exitstatus


@pytest.fixture
def one_thread():
    """torch on one thread for the test. Random-init ResNet-18 features of 32 px digits sit so
    close together that the threads' float rounding flips near-tied neighbours, and with them
    the head's best epoch and whether the gate promotes it: one thread makes it repeatable."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
