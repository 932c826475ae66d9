"""User-facing errors: bad input ends with one clear line and a non-zero exit, never a traceback.

``common.cli.run_cli`` catches them at the top of every command-line tool.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix (bad option, missing data, unreadable checkpoint); exit code 2."""

    exit_code = 2
