"""What every job stands on: the Spark plumbing.

``config`` (the settings, validated), ``cli`` (a job's command line, its one-line errors), ``errors`` (the errors
raised on purpose), ``paths`` (local and Spark paths, the built-in sample and model), ``table_names`` (a table
name or a path), ``session`` (the Spark session, classic or Connect, and shipping code to executors),
``launch_args`` (what ``spark-submit.sh`` passes to Spark), ``code_package`` (the code zip executors import),
``delta_connector_jars`` (the Delta connector's jars), ``local_metastore`` (the local Hive metastore), ``java``
(a JDK for the JVM).

May import: only this package (and ``udfs``). Never a job, ``jobs.lake`` or ``jobs.learning``.
"""
