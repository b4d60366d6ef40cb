"""Benchmarks for zimg: run ``python -m zimg.bench.actors`` for the actor messaging figures."""
