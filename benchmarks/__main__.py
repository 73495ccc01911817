"""``python -m benchmarks`` (``./dev bench``): run the benchmark suite."""

import sys

from benchmarks.cli import main

sys.exit(main())
