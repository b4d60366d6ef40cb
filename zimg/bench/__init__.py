"""Benchmarks for zimg.

``python -m zimg.bench`` (``just bench``) is the comparison against a plain loop,
``multiprocessing.Pool``, Ray and Dask, with micro-figures against raw pyzmq. Its modules:
``workload`` (the generated JPEGs and the job), ``contenders`` and ``peers`` (the ways of running
it), ``micro`` and ``rss`` (the micro-figures), ``report`` (ratios, targets, the table), ``page``
(the Markdown page and the chart) and ``_common`` (shared helpers). ``python -m
zimg.bench.actors`` is the actor messaging benchmark alone.
"""
