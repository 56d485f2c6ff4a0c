"""``python -m homodyne`` runs the ``homodyne`` command."""

import sys

from ._cli import main

sys.exit(main())
