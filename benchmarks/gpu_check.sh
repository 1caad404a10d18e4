#!/usr/bin/env bash
# One call on a machine with an NVIDIA GPU: build the CPU extension, run the
# GPU tests, then the GPU benchmarks.  Logs and tables go to $OUT (default
# ./gpu_out).  Wheels of packages the machine lacks (setuptools >= 77 for the
# build, monai for the U-Nets) may sit in .whl/ and are installed first.
#
#     bash benchmarks/gpu_check.sh            # everything, about 6 minutes on an H100/H200
#     STAGES="suite models" bash benchmarks/gpu_check.sh   # stages: tests suite kernels models
set -u -o pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
STAGES=${STAGES:-"tests kernels models"}
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# the autotuner's cache of this run only
export PYWINO3D_CACHE_DIR="$(mktemp -d)"

{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
    python3 -c "import cupy, torch, numpy; print('cupy', cupy.__version__, 'CUDA runtime',
cupy.cuda.runtime.runtimeGetVersion(), 'torch', torch.__version__, 'numpy', numpy.__version__)"
    nproc; grep -m1 "model name" /proc/cpuinfo; grep -o "avx512[a-z_]*" /proc/cpuinfo | sort -u | tr "\n" " "; echo
} 2>&1 | tee "$OUT/machine.txt"

start=$(date +%s)
python3 setup.py -q build_ext --inplace -j "$(nproc)" >"$OUT/build.log" 2>&1 || {
    tail -40 "$OUT/build.log"
    exit 1
}
echo "build: $(( $(date +%s) - start )) s"

status=0
for stage in $STAGES; do
    start=$(date +%s)
    case $stage in
    tests)
        # every test that needs a GPU, and the emulation tests beside them
        timeout 200 python3 -m pytest -q -p no:cacheprovider -rs \
            tests/test_backends.py tests/test_properties.py tests/test_accuracy.py \
            tests/test_lowrank.py tests/test_torch_reliability.py tests/test_cuda_emulation.py \
            2>&1 | tee "$OUT/tests.log" | tail -30 || status=1
        ;;
    suite)
        # the whole CPU suite on this machine's CPU (an AVX-512 build where
        # the host has it: CI's machines have AVX2 only); dask is not there
        timeout 300 python3 -m pytest -q -p no:cacheprovider -n 6 --ignore tests/test_dask.py tests \
            2>&1 | tee "$OUT/suite.log" | tail -30 || status=1
        ;;
    kernels)
        timeout 110 python3 benchmarks/bench_gpu.py --batch 8 --md "$OUT/bench_gpu.md" \
            2>&1 | tee "$OUT/bench_gpu.log" | tail -12 || status=1
        ;;
    models)
        timeout 170 python3 benchmarks/bench_models.py --device cuda --nets c3d basicunet r3d \
            --batch 2 --modes eval train --repeat 25 --json "$OUT/models_gpu.json" \
            2>&1 | tee "$OUT/models_gpu.log" | grep -v "tuning layers" | tail -12 || status=1
        ;;
    esac
    echo "stage $stage: $(( $(date +%s) - start )) s"
done
exit $status
