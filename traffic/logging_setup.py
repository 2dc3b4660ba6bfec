"""Logging configuration for the console script (library code only logs)."""

from __future__ import annotations

import logging
import os


def configure(verbosity: int = 0) -> None:
    """Log to stderr; ``-v`` for INFO, ``-vv`` for DEBUG; ``TRAFFIC_LOG_LEVEL`` overrides."""
    level_name = os.environ.get("TRAFFIC_LOG_LEVEL")
    if level_name:
        level = getattr(logging, level_name.upper(), logging.WARNING)
    else:
        level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # paho and psycopg are chatty at DEBUG; keep them at WARNING unless asked
    if level > logging.DEBUG:
        for noisy in ("paho", "psycopg", "psycopg.pool"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
