#!/usr/bin/env bash
# The checks that need a GPU, on a machine with an NVIDIA GPU (nvidia-smi on PATH). For each Keras backend installed
# (tensorflow, torch, jax), in a process of its own where that backend's default device is the GPU: tests/test_gpu.py
# (the embed worker on GPU 0: placement, float32 exact, memory taken as needed), then the runtime's conformance,
# invariance, token-cache and reduced-precision tests. Then the bench on the GPU, float32 and bfloat16.
#
#   tests/run_on_gpu.sh [PYTHON]        # default: .venv/bin/python where it exists, else python3
#   GPU_BENCH="--arch original --token-budget 16384" tests/run_on_gpu.sh   # the bench's options (GPU_BENCH=skip: none)
#
# Exit status: 0 when every test ran passed, 1 when one failed, 2 on a machine without a GPU.
set -u
cd "$(dirname "$0")/.."
python=${1:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
if ! nvidia-smi -L; then
    echo "run_on_gpu: no NVIDIA GPU here (nvidia-smi is absent or lists none)" >&2
    exit 2
fi
status=0
backends=()
for backend in tensorflow torch jax; do
    if ! "$python" -c "import $backend" 2>/dev/null; then
        echo "== $backend: not installed, skipped"
        continue
    fi
    backends+=("$backend")
    echo "== $backend: tests/test_gpu.py"
    KERAS_BACKEND=$backend "$python" -m pytest -n 0 -p no:cacheprovider -q -ra tests/test_gpu.py || status=1
    echo "== $backend: the runtime's promises, on the GPU"
    KERAS_BACKEND=$backend "$python" -m pytest -n 0 -p no:cacheprovider -q -ra -m "not slow" \
        tests/test_elmo_conformance.py tests/test_elmo_runtime.py tests/test_token_cache.py || status=1
done
if [ "${GPU_BENCH:-}" != skip ]; then
    for backend in "${backends[@]}"; do
        echo "== $backend: python -m udfs.elmo bench ${GPU_BENCH:---arch small,original --token-budget 2048,16384}"
        # shellcheck disable=SC2086
        "$python" -m udfs.elmo bench --backend "$backend" --precision float32,bfloat16 \
            ${GPU_BENCH:---arch small,original --token-budget 2048,16384} || status=1
    done
fi
exit $status
