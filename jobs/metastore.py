"""The local metastore's command line: table names that outlive a process (the server itself:
``jobs/platform/local_metastore.py``).

    python -m jobs.metastore status    # is it running, where, and the spark-submit options a session needs
    python -m jobs.metastore start     # start it (a job that uses a table name does this itself)
    python -m jobs.metastore stop
    python -m jobs.metastore fetch     # its two jars, once (./setup.sh does this)
"""

from __future__ import annotations

import sys

from jobs.platform.local_metastore import main

if __name__ == "__main__":
    sys.exit(main())
