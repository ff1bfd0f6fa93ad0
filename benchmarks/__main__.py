"""Entry point: ``python -m benchmarks [--quick] [--only SECTION ...]``."""

from benchmarks.run import main

main()
