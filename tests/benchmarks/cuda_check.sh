#!/bin/sh
# Issue 11's GPU checks in one call on a lent GPU machine (the `device` tool), from the repository root.
#
#   here, first:  make cuda-wheels      (what the GPU image lacks: transformer-lens, datasets, ... into .whl/)
#   then:         device run  command="sh tests/benchmarks/cuda_check.sh"  carry=[".whl"]  timeout_s=540
#
# Installs the carried wheels (the image has torch, transformers, pandas, pytest, ...), puts this checkout on
# PYTHONPATH, runs tests/test_cuda.py (the fast path against CPU, a run against its CPU twin, the ensemble
# equivalence of the issue), then the ensemble benchmark on the GPU: canonical R = 1 and 64 (the issue's
# aim: 20x), small and tiny R = 1, 16, 64. Everything it prints is also written under $OUT.
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch; print(torch.__version__)"; } 2>&1 | tee "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/tests.txt"
python3 tests/benchmarks/sweep.py --device cuda --sizes canonical --members 1,64 --repeats 1 --eval-every 10 2>&1 | tee "$OUT/sweep_canonical.txt"
python3 tests/benchmarks/sweep.py --device cuda --sizes small,tiny --members 1,16,64 --repeats 1 --eval-every 10 2>&1 | tee "$OUT/sweep_small_tiny.txt"
