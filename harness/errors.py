"""User errors: mistakes in the input that the user fixes (a config value, a data file, a model path).

A validator raises ``UserError`` with one message that names the key / file / line and says what to do. The job
records it as ``status: user_error`` (not a result: summaries leave it out) and the entry point prints the
message alone and exits with ``USER_ERROR_EXIT`` — no traceback, because the traceback would only show where
the harness noticed, not what to change. Every other exception is an internal error and keeps its traceback.
``HYDRA_FULL_ERROR=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import os

# Exit status of `python -m harness` after a user error (2, as argparse uses for bad arguments); 1 = a job failed.
USER_ERROR_EXIT = 2


class UserError(ValueError):
    """A mistake in the input; the message alone tells the user what to change."""


def full_errors() -> bool:
    """Hydra's switch for complete stack traces, honoured for user errors too."""
    return os.environ.get("HYDRA_FULL_ERROR", "0") not in ("0", "", "false", "False")
