"""Train or evaluate HyP² (see README.md): ``python retrieval.py --dataset demo``."""
import sys

from hyp2.cli import main

if __name__ == "__main__":
    sys.exit(main())
