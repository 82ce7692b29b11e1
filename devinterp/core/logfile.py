"""The `devinterp` logger writing to a run's log file (train.log, follow.log) instead of the console,
which shows progress bars and summaries."""
from __future__ import annotations

import logging
from pathlib import Path

LOGGER = "devinterp"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_to_file(path: Path) -> None:
    """Send the `devinterp` logger's INFO and above to `path` only (replacing any file it wrote to)."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    _close_handlers(logger)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(handler)


def stop_logging_to_file() -> None:
    """Detach the log file (later log lines of this process are not the run's)."""
    logger = logging.getLogger(LOGGER)
    _close_handlers(logger)
    logger.propagate = True


def _close_handlers(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


class RunLog:
    """The `devinterp` logger writing to a run's log file instead of the console, until `close`, which
    restores it as it was (for a run inside a library caller's process: a monitored run, an analysis of
    checkpoint folders). Several at once each get every line."""

    def __init__(self, path: Path):
        logger = logging.getLogger(LOGGER)
        self.saved = (logger.level, logger.propagate)
        self.handler = logging.FileHandler(path)
        self.handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(self.handler)
        logger.propagate = False
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)

    def close(self) -> None:
        logger = logging.getLogger(LOGGER)
        logger.removeHandler(self.handler)
        self.handler.close()
        logger.setLevel(self.saved[0])
        logger.propagate = self.saved[1]
