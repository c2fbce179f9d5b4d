"""The log config of `emb serve`'s uvicorn: its own notices from warning level up, and request
lines when asked for, every one or only those answered with an error (`--verbose`). Filters
are named by import path so that each worker process builds its own."""

from __future__ import annotations

import copy
import logging


class ErrorsOnly(logging.Filter):
    """Passes uvicorn's access records whose status code is 400 or more."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return len(args) >= 5 and str(args[4]).isdigit() and int(args[4]) >= 400


def log_config(errors_only: bool) -> dict:
    """uvicorn's default config, its own logger at warning level, the access lines filtered to
    errors when `errors_only`."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["uvicorn.error"]["level"] = "WARNING"
    if errors_only:
        config["filters"] = {"errors_only": {"()": f"{__name__}.ErrorsOnly"}}
        config["handlers"]["access"]["filters"] = ["errors_only"]
    return config
