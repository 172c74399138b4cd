"""``python -m pespot`` (used by ``torchrun -m pespot train ...``)."""

import sys

from pespot.cli import main

sys.exit(main())
