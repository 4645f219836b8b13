"""Errors that end a command, each with the exit code DESIGN.md assigns to it.

Commands raise these; `cloudir.cli` turns them into one line on stderr and the exit
code, so a responder never sees a traceback unless they asked for `--debug`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_EVIDENCE = 3
EXIT_CLOUD = 4


class CloudirError(Exception):
    """A failure the user can act on; the message says what to do next."""

    exit_code = EXIT_EVIDENCE


class UsageError(CloudirError):
    exit_code = EXIT_USAGE


class EvidenceError(CloudirError):
    exit_code = EXIT_EVIDENCE


class CloudError(CloudirError):
    """AWS or Docker refused or failed after retries."""

    exit_code = EXIT_CLOUD
