#!/usr/bin/env bash
# One device call: the engine's CUDA tests, then the engine benchmark (see docs/engine-notes.md).
#   run: bash benchmarks/device_engine.sh [benchmark args...]   ($OUT receives engine.json and the logs)
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
if [ -z "${SKIP_TESTS:-}" ]; then
    timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -q --tb=short -p no:cacheprovider tests/engine/test_engine_cuda.py \
        tests/engine/test_moe.py tests/model/test_vision.py 2>&1 | tee "$OUT/tests.log" | tail -40
fi
timeout "${BENCH_TIMEOUT:-330}" python3 benchmarks/engine.py --json "$OUT/engine.json" "$@" 2>&1 | tee "$OUT/bench.log"
