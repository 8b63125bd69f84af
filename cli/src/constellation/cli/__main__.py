"""Entry point of the ``constellation`` command (console script and ``python -m``)."""

from __future__ import annotations

import sys

from constellation.cli.root import run


def main() -> int:
    return run()


if __name__ == "__main__":
    sys.exit(main())
