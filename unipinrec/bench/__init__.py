"""Benchmarks and diagnostics beside the library: timings, memory plans, index recall, the
ranking gap. No core module imports them; the `experiments.bench_*` launchers and
`experiments.memory`, `experiments.ranking_gap` do.
"""
