"""The command-line front ends' shared parts: an argparse parser whose errors are one line, and the
wrapper that turns a user's mistake into one line on stderr and a documented exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from fastgradmix.common.errors import UserError


class OneLineParser(argparse.ArgumentParser):
    """argparse prints the whole usage block on a bad option; one line and exit code 2 is friendlier."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


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
