"""``python -m slt`` is the ``slt`` command."""

import sys

from slt.cli import main

sys.exit(main())
