#!/usr/bin/env bash
# Spark GPU discovery script: prints the GPUs of this node as {"name":"gpu","addresses":["0","1",...]}.
set -euo pipefail
if command -v nvidia-smi >/dev/null 2>&1; then
  addrs=$(nvidia-smi --query-gpu=index --format=csv,noheader | sed -e 's/^ *//' -e 's/.*/"&"/' | paste -sd, -)
else
  addrs=""
fi
echo "{\"name\": \"gpu\", \"addresses\": [${addrs}]}"
