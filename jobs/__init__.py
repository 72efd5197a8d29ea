"""Driver-side entry points of elmo-lake: argument parsing, Spark sessions, Delta I/O and orchestration."""
