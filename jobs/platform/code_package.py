"""The project's code as one zip (jobs/, udfs/, conf/), named by its content: what executors import.

spark-submit.sh ships it with --py-files; on Spark Connect the session helper adds it with
``spark.addArtifacts(zip, pyfile=True)``, so a server that has only the pinned Python environment runs our UDFs.

    python -m jobs.platform.code_package BUILD_DIR      # prints the zip's path (built once per content)
"""

from __future__ import annotations

import hashlib
import os
import sys
import zipfile
from pathlib import Path

PACKAGES = ("jobs", "udfs", "conf")
SUFFIXES = (".py", ".toml", ".sh", ".json")


def package_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for package in PACKAGES:
        for dirpath, dirnames, names in os.walk(root / package):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            files += [Path(dirpath) / n for n in sorted(names) if n.endswith(SUFFIXES)]
    return files


def build_code_zip(root: Path, build: Path) -> Path:
    """``build/elmo_lake-<hash>.zip`` of the code under ``root``; concurrent callers never see a partial zip."""
    files = package_files(root)
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(root)).encode())
        digest.update(file.read_bytes())
    build.mkdir(parents=True, exist_ok=True)
    target = build / f"elmo_lake-{digest.hexdigest()[:12]}.zip"
    if not target.exists():
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in files:
                archive.write(file, str(file.relative_to(root)))
        os.replace(tmp, target)
    return target


def code_zip() -> Path:
    """The zip this process runs from (the launcher says which), else one built from this checkout."""
    shipped = os.environ.get("ELMO_LAKE_CODE_ZIP")
    if shipped and Path(shipped).is_file():
        return Path(shipped)
    root = Path(__file__).resolve().parents[2]
    if not (root / "jobs").is_dir():  # imported from a zip without the launcher's variable
        raise FileNotFoundError(f"cannot find the project's code to ship (jobs/ is not under {root})")
    try:
        return build_code_zip(root, root / "build")
    except OSError:  # a read-only checkout (a mounted repo): build in the temp folder instead
        import tempfile

        return build_code_zip(root, Path(tempfile.gettempdir()) / "elmo-lake-build")


if __name__ == "__main__":
    print(build_code_zip(Path(__file__).resolve().parents[2], Path(sys.argv[1])))
