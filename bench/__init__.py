"""`make bench`: the benchmark of issue #9 (run bench/bench.py; never a timed unit test)."""
