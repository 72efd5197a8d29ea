#!/usr/bin/env bash
# Spark GPU discovery script: prints the GPUs of this node as {"name":"gpu","addresses":["0","1",...]}.
#
# Spark runs it on each worker (spark.worker.resource.gpu.discoveryScript) or executor
# (spark.executor.resource.gpu.discoveryScript) and hands the addresses out to tasks
# (spark.task.resource.gpu.amount). The addresses come from nvidia-smi; ELMO_LAKE_GPU_ADDRESSES="0,1" lists them
# instead (nodes whose nvidia-smi is not on PATH, or a drill of GPU scheduling on a machine without GPUs: the
# tasks then get addresses, and TensorFlow, finding no GPU, runs on the CPU).
set -euo pipefail
if [[ -n "${ELMO_LAKE_GPU_ADDRESSES:-}" ]]; then
  addrs=$(tr ',' '\n' <<<"$ELMO_LAKE_GPU_ADDRESSES" | sed -e 's/^ *//' -e 's/ *$//' -e '/^$/d' -e 's/.*/"&"/' | paste -sd, -)
elif command -v nvidia-smi >/dev/null 2>&1; then
  addrs=$(nvidia-smi --query-gpu=index --format=csv,noheader | sed -e 's/^ *//' -e 's/.*/"&"/' | paste -sd, -)
else
  addrs=""
fi
echo "{\"name\": \"gpu\", \"addresses\": [${addrs}]}"
