"""A run whose `emb` process was killed (kill -9) is failed by the next `emb`, with a message
that says so; runs of living processes, and re-executions that copied a run's tags, are not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from embedding_assets.cli import orphan_runs
from embedding_assets.cli.orphan_runs import fail_orphaned_runs, run_tags

# A process that executes a job the way `emb run` does (runner.execute), its op sleeping until
# the process is killed.
SLEEPER = """
import sys, time
from pathlib import Path
import dagster as dg
from embedding_assets.cli.runner import execute

@dg.op
def sleep_forever() -> None:
    Path(sys.argv[1]).write_text("running")
    time.sleep(600)

@dg.job
def sleeper():
    sleep_forever()

with dg.DagsterInstance.get() as inst:
    execute(sleeper, inst, {})
"""


@dg.op
def noop() -> None:
    pass


@dg.job
def tiny():
    noop()


def _started_run(inst: dg.DagsterInstance, tags: dict[str, str], run_id: str) -> dg.DagsterRun:
    return inst.create_run_for_job(
        tiny, run_id=run_id, tags=tags, status=dg.DagsterRunStatus.STARTED
    )


def _killed_emb_run(tmp_path: Path) -> tuple[str, int]:
    """Start a process executing a run as `emb run` does, kill -9 it mid-run: (run id, pid)."""
    marker = tmp_path / "running"
    script = tmp_path / "sleeper.py"
    script.write_text(textwrap.dedent(SLEEPER))
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.Popen([sys.executable, str(script), str(marker)], env=env, cwd=repo)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the sleeper process ended before its run started"
            assert time.monotonic() < deadline, "the sleeper's run did not start"
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with dg.DagsterInstance.get() as inst:
        runs = inst.get_runs(dg.RunsFilter(tags={orphan_runs.PID_TAG: str(proc.pid)}))
    assert len(runs) == 1, "runner.execute did not tag its run with its process"
    return runs[0].run_id, proc.pid


def test_run_of_a_killed_process_is_failed_and_living_ones_are_left(data_dir: Path, tmp_path: Path):
    killed_run, killed_pid = _killed_emb_run(tmp_path)
    with dg.DagsterInstance.get() as inst:
        assert inst.get_run_by_id(killed_run).status == dg.DagsterRunStatus.STARTED

        alive = str(uuid.uuid4())  # this process: alive
        _started_run(inst, run_tags(alive), alive)
        # A re-execution launched from the UI that copied the killed run's tags: not the CLI's.
        copied = str(uuid.uuid4())
        _started_run(inst, inst.get_run_by_id(killed_run).tags, copied)
        # Another host's run: its pid means nothing here.
        elsewhere = str(uuid.uuid4())
        _started_run(inst, {**run_tags(elsewhere), orphan_runs.HOST_TAG: "elsewhere"}, elsewhere)

        assert fail_orphaned_runs(inst) == {killed_run: killed_pid}
        assert fail_orphaned_runs(inst) == {}  # once only

        assert inst.get_run_by_id(killed_run).status == dg.DagsterRunStatus.FAILURE
        failures = inst.all_logs(killed_run, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert len(failures) == 1
        message = failures[0].dagster_event.message
        assert f"pid {killed_pid}" in message and "is gone" in message
        assert "again to resume" in message
        for run_id in (alive, copied, elsewhere):
            assert inst.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_reused_pid_does_not_keep_a_run_alive(data_dir: Path):
    """The pid lives, but it is another process now: its start time is not the recorded one."""
    with dg.DagsterInstance.get() as inst:
        run_id = str(uuid.uuid4())
        tags = {**run_tags(run_id), orphan_runs.PID_START_TAG: "1"}
        _started_run(inst, tags, run_id)
        assert fail_orphaned_runs(inst) == {run_id: os.getpid()}
        assert inst.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _orphan(inst: dg.DagsterInstance) -> tuple[str, int]:
    run_id, pid = str(uuid.uuid4()), _dead_pid()
    tags = {**run_tags(run_id), orphan_runs.PID_TAG: str(pid)}
    tags.pop(orphan_runs.PID_START_TAG, None)
    _started_run(inst, tags, run_id)
    return run_id, pid


def test_emb_run_and_emb_ui_report_the_runs_they_fail(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from embedding_assets.cli import app as cli
    from embedding_assets.cli import runner

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(runner, "execute", stop)  # the job itself
    monkeypatch.setattr(cli.os, "execvp", stop)
    for command in (lambda: cli._run({}, verbose=False), lambda: cli.ui(port=3000)):
        with dg.DagsterInstance.get() as inst:
            run_id, pid = _orphan(inst)
        with pytest.raises(Stop):
            command()
        err = capsys.readouterr().err
        assert f"marked run {run_id} failed: its process (pid {pid}) is gone" in err
        assert "Traceback" not in err
        with dg.DagsterInstance.get() as inst:
            assert inst.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
