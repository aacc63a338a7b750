"""``pneumoview`` / ``python -m pneumoview``: the CLI for a known command, otherwise the viewer.

* ``pneumoview scan DIR``, ``pneumoview --help``, ``pneumoview --version`` … run the command line
  (:mod:`pneumoview.cli`), which never loads Qt.
* ``pneumoview`` or ``pneumoview PATH …`` opens the viewer:
  ``pneumoview.gui.app.main(argv: list[str]) -> int`` receives the arguments after the program name.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

_CLI_OPTIONS = frozenset({"-h", "--help", "--version"})


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the CLI or the viewer; returns the exit code."""
    # lazy: `pneumoview` with no command starts the viewer without loading the CLI's commands
    from pneumoview import cli

    args = list(sys.argv[1:] if argv is None else argv)
    if args and (args[0] in _CLI_OPTIONS or args[0] in cli.command_names()):
        return cli.main(args)
    try:
        # lazy: the viewer (Qt) is loaded only when it starts
        from pneumoview.gui.app import main as gui_main
    except ImportError as exc:
        print(
            f"pneumoview: the viewer cannot start ({exc}). The command line still works: run "
            "'pneumoview --help' to list its commands.",
            file=sys.stderr,
        )
        return cli.EXIT_USAGE
    return int(gui_main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
