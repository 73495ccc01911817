"""``python -m unionfs`` is the ``unionfs`` command."""

import sys

from unionfs.cli import main

sys.exit(main())
