"""python -m derive.bench: the same as `derive bench`."""
import sys

from .cpu import main

sys.exit(main())
