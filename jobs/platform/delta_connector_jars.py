"""The Delta Lake connector's jars: fetched once by ./setup.sh, then given to every classic session and server.

    python -m jobs.platform.delta_connector_jars fetch     # resolve through Spark's own --packages (Ivy), keep the jars
    python -m jobs.platform.delta_connector_jars status    # what is installed, and the spark-submit options it gives

``fetch`` runs ``spark-submit --packages io.delta:delta-spark_<spark>_2.13:<version>`` once with its Ivy cache under
``build/ivy`` and keeps, in ``build/delta-connector/``, the resolved jars that Spark does not ship itself (Delta's
own and a few small libraries: ~13 MB). Later sessions get them through ``spark.jars`` (``--jars`` on
spark-submit: a cluster's executors receive them from the driver), with Delta's session extension and catalog,
as ``delta.pip_utils.configure_spark_with_delta_pip`` sets them, and never resolve again.

The version asked for first is the ``delta-spark`` pip package's; when Maven Central has no jars of that
version (delta-spark 4.4.1 was published to PyPI only), the newest published patch release of the same minor
version is taken and named in the ``fetch`` output.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jobs.platform.errors import SetupError
from jobs.platform.paths import repo_root

GROUP = "io.delta"
EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
# Patch releases published to Maven Central, newest first, tried after the pip package's own version.
PUBLISHED_FALLBACKS = ("4.4.0",)
MANIFEST = "connector.json"


@dataclass(frozen=True)
class Connector:
    """An installed connector: its Maven coordinate and the jar files a session needs besides Spark's own."""

    coordinate: str
    jars: tuple[str, ...]

    @property
    def version(self) -> str:
        return self.coordinate.rsplit(":", 1)[1]


def install_dir() -> Path:
    """$ELMO_LAKE_DELTA_JARS, else build/delta-connector/ of this checkout."""
    override = os.environ.get("ELMO_LAKE_DELTA_JARS")
    return Path(override) if override else repo_root() / "build" / "delta-connector"


def artifact(spark_version: str | None = None) -> str:
    """delta-spark_<spark major.minor>_2.13, the artifact Delta publishes for this Spark."""
    import pyspark

    major_minor = ".".join((spark_version or pyspark.__version__).split(".")[:2])
    return f"delta-spark_{major_minor}_2.13"


def wanted_versions() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        first = [version("delta-spark")]
    except PackageNotFoundError:
        first = []
    return first + [v for v in PUBLISHED_FALLBACKS if v not in first]


def installed() -> Connector | None:
    """The connector that ``fetch`` installed, if all its jars are still there."""
    manifest = install_dir() / MANIFEST
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    jars = tuple(str(install_dir() / name) for name in data.get("jars", []))
    if not jars or not all(os.path.isfile(j) for j in jars):
        return None
    return Connector(data["coordinate"], jars)


def session_settings(connector: Connector) -> dict[str, str]:
    """What a classic session needs to have the connector (static settings: before the JVM starts)."""
    return {
        "spark.jars": ",".join(connector.jars),
        "spark.sql.extensions": EXTENSION,
        "spark.sql.catalog.spark_catalog": CATALOG,
    }


def spark_submit_options(connector: Connector) -> list[str]:
    """The same as spark-submit options: ``--jars`` ships them to a cluster's driver and executors."""
    return [
        "--jars",
        ",".join(connector.jars),
        "--conf",
        f"spark.sql.extensions={EXTENSION}",
        "--conf",
        f"spark.sql.catalog.spark_catalog={CATALOG}",
    ]


def wants_connector(engine: str) -> bool:
    """The config's delta.engine: 'auto' and 'spark' take the connector where it is installed."""
    return engine in ("auto", "spark")


NOT_INSTALLED = (
    "the Delta connector's jars are not installed here, so Delta tables are read and written with the delta-rs "
    "engine; run ./setup.sh where Maven Central is reachable to fetch them (or give spark-submit --packages "
    "{coordinate}), or --set delta.engine=delta-rs to choose that engine and silence this line"
)


def not_installed_line() -> str:
    return NOT_INSTALLED.format(coordinate=f"{GROUP}:{artifact()}:{wanted_versions()[-1]}")


def fetch(quiet: bool = False) -> Connector:
    """Resolve the connector with Spark's own Ivy resolution and install the jars Spark lacks; raise if none of
    the versions can be had (an air-gapped machine)."""
    from jobs.platform.java import ensure_java

    current = installed()
    if current is not None:
        return current
    ensure_java()
    home = spark_home()
    ivy = repo_root() / "build" / "ivy"
    failures = []
    for version in wanted_versions():
        coordinate = f"{GROUP}:{artifact()}:{version}"
        try:
            jars = resolve_packages(home, coordinate, ivy)
        except ResolutionError as exc:
            failures.append((coordinate, str(exc)))
            continue
        connector = _install(home, coordinate, jars)
        if not quiet and failures:
            print(
                f"delta_connector_jars: could not resolve {_tried(failures)}; installed {coordinate} (same minor "
                "version)",
                file=sys.stderr,
            )
        return connector
    raise SetupError(
        f"could not resolve the Delta connector through spark-submit --packages ({_tried(failures)}): no Maven "
        "Central here? Jobs will use the delta-rs engine"
    )


def _tried(failures: list[tuple[str, str]]) -> str:
    """Each coordinate that did not resolve, with Spark's reason (a version not published says 'not found')."""
    return "; ".join(f"{coordinate}: {why}" for coordinate, why in failures)


# Maven Central alone, for a second try. Spark's default chain asks ~/.m2 first, and a ~/.m2 that holds a module's
# pom but not its jar (left by `mvn dependency:get` of another version, or by a build that fetched only metadata)
# makes Ivy take the module from there and then fail with "download failed" for its jar. Extra repositories given
# with spark.jars.repositories still join this chain.
CENTRAL_ONLY_IVY_SETTINGS = """<ivysettings>
  <settings defaultResolver="central"/>
  <resolvers>
    <ibiblio name="central" m2compatible="true" root="https://repo1.maven.org/maven2/"/>
  </resolvers>
</ivysettings>
"""


class ResolutionError(SetupError):
    """Spark's --packages resolution failed; the message is Spark's own reason (not found, download failed)."""


def resolve_packages(spark_home: str, coordinate: str, ivy: Path) -> list[Path]:
    """Spark's own resolution of ``--packages`` (one coordinate, or several joined by commas): the jar files it
    retrieved, or ResolutionError with Spark's reason. Where the first try failed on jars that ~/.m2 named but did
    not hold, once more from Maven Central alone. Also used for the local metastore's Derby jars
    (jobs/platform/local_metastore.py)."""
    home = ivy / coordinate.replace(":", "_")  # one Ivy home per coordinate: its jars/ holds just this one's
    done, output = _spark_resolve(spark_home, coordinate, home)
    if not done and "download failed" in output and "local-m2-cache" in output:
        home = ivy / (coordinate.replace(":", "_") + "-central")  # a fresh cache: the first one names ~/.m2
        done, output = _spark_resolve(spark_home, coordinate, home, CENTRAL_ONLY_IVY_SETTINGS)
    jars = sorted((home / "jars").glob("*.jar"))
    if done and jars:
        return jars
    raise ResolutionError(_resolution_reason(output))


def _spark_resolve(
    spark_home: str, coordinate: str, home: Path, settings: str | None = None
) -> tuple[bool, str]:
    """One ``spark-submit --packages`` of an empty script with its Ivy home at ``home``: (succeeded, its output)."""
    with tempfile.TemporaryDirectory(prefix="elmo-lake-delta-") as scratch:
        noop = Path(scratch) / "resolved.py"
        noop.write_text("")
        options = ["--conf", f"spark.jars.ivy={home}"]
        if settings is not None:
            (Path(scratch) / "ivysettings.xml").write_text(settings)
            options += ["--conf", f"spark.jars.ivySettings={Path(scratch) / 'ivysettings.xml'}"]
        done = subprocess.run(
            [
                f"{spark_home}/bin/spark-submit",
                "--master",
                "local[1]",
                "--packages",
                coordinate,
                *options,
                str(noop),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"},
        )
    return done.returncode == 0, done.stdout + done.stderr


def _resolution_reason(output: str) -> str:
    """Spark's one-line reason, e.g. 'unresolved dependency: io.delta#delta-spark_4.2_2.13;4.4.1: not found'."""
    found = re.search(r"RuntimeException: \[(.*?)\]\s*$", output, re.MULTILINE)
    if found:
        reasons = found.group(1).split(", ")
        return ", ".join(reasons[:3]) + (f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else "")
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "spark-submit printed nothing"


def _install(spark_home: str, coordinate: str, jars: list[Path]) -> Connector:
    """Keep the jars whose artifact Spark does not ship (Spark's own versions win on its classpath anyway)."""
    shipped = {_artifact_name(p.name) for p in Path(spark_home, "jars").glob("*.jar")}
    keep = [j for j in jars if _artifact_name(j.name.split("_", 1)[-1]) not in shipped]
    install_folder(
        install_dir(),
        {j.name: j for j in keep},
        MANIFEST,
        {"coordinate": coordinate, "jars": sorted(j.name for j in keep)},
    )
    connector = installed()
    assert connector is not None
    return connector


def install_folder(target: Path, files: dict[str, Path], manifest_name: str, manifest: dict) -> None:
    """Fill ``target`` with ``files`` (name -> source) and a JSON manifest, all or nothing: the files go to a
    staging folder that replaces ``target`` at the end, so a killed fetch leaves no half-filled folder behind.
    The connector's jars and the local metastore's (jobs/metastore.py) are installed this way."""
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, source in files.items():
        shutil.copy2(source, staging / name)
    (staging / manifest_name).write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def spark_home() -> str:
    """$SPARK_HOME, else the pyspark package's folder (its bin/ and jars/)."""
    import pyspark

    return os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__)


def _artifact_name(file_name: str) -> str:
    """'parquet-column-1.17.0.jar' -> 'parquet-column' (the artifact without its version)."""
    stem = file_name.removesuffix(".jar")
    parts = stem.split("-")
    while parts and parts[-1][:1].isdigit():
        parts.pop()
    return "-".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="delta_connector_jars", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "action", choices=("fetch", "status"), help="fetch the jars once, or show what is installed"
    )
    args = parser.parse_args(argv)
    from jobs.platform.errors import ElmoLakeError

    if args.action == "status":
        connector = installed()
        if connector is None:
            print(f"not installed in {install_dir()}: {not_installed_line()}")
            return 1
        print(f"{connector.coordinate}: {len(connector.jars)} jars in {install_dir()}")
        return 0
    try:
        connector = fetch()
    except ElmoLakeError as exc:
        print(f"delta_connector_jars: {exc}", file=sys.stderr)
        return 1
    size = sum(os.path.getsize(j) for j in connector.jars) / 2**20
    print(
        f"Delta connector {connector.coordinate}: {len(connector.jars)} jars ({size:.0f} MB) in {install_dir()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
