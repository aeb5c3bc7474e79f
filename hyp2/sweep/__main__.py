"""``python -m hyp2.sweep PLAN [flags]`` (see :mod:`hyp2.sweep.command`)."""
import sys

from .command import main

sys.exit(main())
