"""The lake -> batch pipeline: a window of ``request_logs`` read at a pinned table version
(:mod:`.window`, with the late rows of :mod:`.late`), every row validated and the bad ones
quarantined (:mod:`.validate`, :mod:`.scan`), the kept rows collated into
:class:`~dnr.data.batch.RerankBatch` (:mod:`.collate`); and the Parquet files this project writes
(:mod:`.delta_files`).

Runs on the driver (planning a window, committing quarantine) and in Ray Data tasks and Train
workers (validation, collate). It touches the lake and Ray Data, never the registry, a model or
a process group. Where logs come from when no platform writes them is :mod:`dnr.datasets`.
"""
