"""``python -m mmcontrast ...``: the command line, as the ``mmcontrast`` script runs it."""

from mmcontrast.cli import main

raise SystemExit(main())
