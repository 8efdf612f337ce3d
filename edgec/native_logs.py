"""Keep the native start-up chatter of TensorFlow, LiteRT and tf2onnx off the user's terminal.

TensorFlow's C++ core writes "oneDNN custom operations are on" and absl's "All log messages before
absl::InitializeLog()" straight to file descriptor 2 on import and again when its runtime starts,
before any Python logging can filter them; LiteRT announces its XNNPACK delegate the same way, and
tf2onnx logs whole tracebacks of conversions it retries. None of it is actionable, and it buries
edgec's own progress and error lines, so it is dropped unless edgec logs at INFO (`--verbose`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

__all__ = ["quiet_native_logs"]

#: Python loggers of the frameworks whose messages are dropped along with the native ones.
_LOGGERS = ("tensorflow", "tf2onnx", "absl", "keras")


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Silence file descriptor 2, the frameworks' loggers and warnings inside the block (not with --verbose).

    Nothing of edgec's own may be printed inside the block: its messages would be dropped too.
    Errors still surface, as the exceptions they raise.
    """
    if logging.getLogger("edgec").isEnabledFor(logging.INFO):
        yield
        return
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.CRITICAL)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        for each, level in zip(loggers, levels):
            each.setLevel(level)
