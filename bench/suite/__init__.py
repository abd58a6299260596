"""The benchmark suite: `python -m bench.suite` (see __main__)."""
