"""User-facing errors: bad input ends with one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """Something the user can fix (bad option, missing data, unreadable checkpoint); exit code 2."""

    exit_code = 2


def run_cli(main: Callable[[], None], prog: str) -> None:
    """Runs ``main`` and turns the failures a user can act on into one line on stderr."""
    try:
        main()
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the last completed epoch's checkpoint is intact (use --resume)",
              file=sys.stderr)
        sys.exit(130)
