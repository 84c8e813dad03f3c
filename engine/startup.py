"""The one kind of error that stops a process at start, and how it stops.

Bad settings, no Redis to reach, a handler that does not load: the operator
needs one line saying what to fix, not a traceback. Code raises StartupError
anywhere; only the `__main__` modules turn it into a line on stderr and exit
status 1, so library code never ends the process itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class StartupError(Exception):
    """The process cannot start; the message names what to fix."""


EXIT_STARTUP = 1


def exit_on_startup_error(main: Callable[[], None]) -> None:
    """Run a process's main(); a StartupError ends it with its message and status 1."""
    try:
        main()
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_STARTUP)
