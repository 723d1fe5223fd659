"""``python -m jtconv`` — same as the ``jtconv`` console script."""

import sys

from jtconv.cli import main

sys.exit(main())
