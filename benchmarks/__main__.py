"""``python -m unionfs.benchmarks`` (``./dev bench``): run the benchmark suite."""

import sys

from unionfs.benchmarks.cli import main

sys.exit(main())
