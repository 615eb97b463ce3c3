"""``python -m mimoq.cli`` is ``mimoq``."""

import sys

from mimoq.cli import main

sys.exit(main())
