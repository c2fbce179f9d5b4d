"""Runs left STARTED by a killed `emb run`: found by the process tags the CLI puts on its runs
and marked failed.

The CLI executes its runs in its own process (`execute_in_process`), so when that process is
killed (kill -9, the OOM killer, a lost SSH session) nothing records the end
of the run and the UI shows it running forever: run monitoring cannot check an in-process run's
worker. Every run the CLI starts therefore carries the id, start time and host of its process;
`emb run`, `emb demo` and `emb ui` look for runs whose process is gone and fail them.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg

PID_TAG = "emb/pid"
PID_START_TAG = "emb/pid_start"  # the process's start time, to tell a reused pid apart
HOST_TAG = "emb/host"
RUN_TAG = "emb/run_id"  # a re-execution copies its parent's tags, but not its run id

ORPHAN_MESSAGE = (
    "The `emb` process that ran this run (pid {pid} on {host}) is gone, killed before the run "
    "finished. Run `emb run` (or `emb demo`) again to resume: the embeddings already "
    "computed are cached."
)


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, /proc/<pid>/stat field 22), or None
    where /proc cannot tell (not Linux, or no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the name in parentheses may hold spaces
    return fields[19] if len(fields) > 19 else None


def run_tags(run_id: str) -> dict[str, str]:
    """The tags of a run that this process executes as `run_id`."""
    pid = os.getpid()
    tags = {PID_TAG: str(pid), HOST_TAG: socket.gethostname(), RUN_TAG: run_id}
    start = process_start(pid)
    if start is not None:
        tags[PID_START_TAG] = start
    return tags


def process_alive(pid: int, start: str | None = None) -> bool:
    """Whether process `pid` still runs; a zombie counts as gone, and so does a process that
    got the pid later (its start time is not `start`, where /proc tells both)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (or it vanished just now): trust the signal
    rest = stat[stat.rfind(")") + 2 :].split()
    if rest and rest[0] in ("Z", "X"):
        return False
    return start is None or len(rest) <= 19 or rest[19] == start


def fail_orphaned_runs(instance: dg.DagsterInstance) -> dict[str, int]:
    """Mark failed every run that a CLI process on this host started and that is still not
    finished although that process is gone. Returns run id -> pid of the gone process."""
    import dagster as dg

    unfinished = [
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
    ]
    host = socket.gethostname()
    runs = instance.get_runs(dg.RunsFilter(statuses=unfinished, tags={HOST_TAG: host}))
    marked: dict[str, int] = {}
    for run in runs:
        tags = run.tags
        if tags.get(RUN_TAG) != run.run_id or not tags.get(PID_TAG, "").isdigit():
            continue  # not started by the CLI itself (a re-execution that copied the tags)
        pid = int(tags[PID_TAG])
        if process_alive(pid, tags.get(PID_START_TAG)):
            continue
        current = instance.get_run_by_id(run.run_id)  # another `emb` may have just failed it
        if current is None or current.status not in unfinished:
            continue
        instance.report_run_failed(current, ORPHAN_MESSAGE.format(pid=pid, host=host))
        marked[run.run_id] = pid
    return marked


def orphan_lines(instance: dg.DagsterInstance) -> list[str]:
    """fail_orphaned_runs, as one line per run failed for the CLI to print."""
    return [
        f"marked run {run_id} failed: its process (pid {pid}) is gone; a new run resumes its work"
        for run_id, pid in fail_orphaned_runs(instance).items()
    ]
