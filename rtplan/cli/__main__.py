"""``python -m rtplan.cli``: the ``rtplan`` command."""

import sys

from . import main

sys.exit(main())
