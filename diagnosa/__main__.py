"""``python -m diagnosa``: the same command line as the ``diagnosa`` script."""
import sys

from diagnosa.cli import main

sys.exit(main())
