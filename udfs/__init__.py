"""Executor-side code of elmo-lake: pure per-batch functions and the models they run (shipped to workers)."""
