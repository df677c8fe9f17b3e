"""Batch scoring on Apache Spark with the server's own engines: ``python -m score INPUT ...``.

The driver (``score.job``) reads the bundle's manifest, plans which column feeds which model input
(``score.plan``), ships the bundle to the executors with ``SparkContext.addArchive`` and runs
``score.worker`` in ``mapInArrow`` on Arrow record batches. Each Python worker loads the engine once
(``runtime.engines.load_engine``, one intra-op thread) and reuses it; rows are checked with the
engine's own ``validate`` and the server's codecs, so a bad row's ``error`` is the server's 400 text.

score/ imports runtime/ and bundle/, never convert/; runtime/ never imports score/ or pyspark.
"""
