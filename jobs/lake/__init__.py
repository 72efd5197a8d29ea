"""The lake: Delta tables and what is kept in them.

``delta_tables`` (the one read/write surface every job uses) over its two engines, ``delta_connector_engine``
(Delta's own connector) and ``delta_rs_engine`` (plain Spark + delta-rs); ``embedding_sets`` (the sets of an
embedding table); ``quarantine`` (the clean and embed stages' rejects tables).

May import: ``jobs.platform`` and this package (and ``udfs``). Never a job or ``jobs.learning``.
"""
