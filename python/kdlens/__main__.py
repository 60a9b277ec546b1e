"""``python -m kdlens`` is the ``kdlens`` command."""

import sys

from kdlens.cli import main

sys.exit(main())
