"""elmo-lake's driver side. Each module here is a job a user runs (``./spark-submit.sh jobs/JOB.py`` or
``python -m jobs.JOB``); what the jobs share lives in three rooms, each importing only those before it:

``jobs.platform`` (settings, command line, Spark session, paths, launcher) -> ``jobs.lake`` (Delta tables and
their engines) -> ``jobs.learning`` (classifiers, selection, reports, biLM training). Code that runs on executors
is in ``udfs``.
"""
