#!/usr/bin/env bash
# The GPU check: the whole test suite and a short end-to-end CLI run on CUDA, in one call on a
# borrowed GPU machine (one that has PyTorch but no network: no data sets, no package index).
#
#   bash tools/gpu_check.sh            # on the GPU machine, from the repository root
#
# Pure-Python dependencies missing there travel as wheels in .whl/ (see docs/GPU.md for the
# pip download line); they are installed into a scratch folder first. The data are synthetic.
# Logs go to $OUT (or ./gpu-check-logs); the last line is the one-line summary, e.g.
#   gpu_check: NVIDIA H200, torch 2.11.0+cu130: suite 290 passed, 0 failed; cli 9/9 steps; ...
# Exit 0 only when the suite and every CLI step pass. GPU_CHECK_ALLOW_CPU=1 runs it without a
# GPU (a dry run of the script itself); GPU_CHECK_TESTS names test files to run instead of all.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS="${OUT:-$PWD/gpu-check-logs}"
mkdir -p "$LOGS"
PY="${PYTHON:-python3}"
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/gpu-check-site .whl/*.whl || { echo "gpu_check: wheels did not install"; exit 1; }
    export PYTHONPATH="/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}"
fi
# deepcomp itself, editable, so the `deepcomp` command and `python -m deepcomp` both work
if ! "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . >"$LOGS/install.log" 2>&1; then
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
GPU=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")')
TORCH=$("$PY" -c 'import torch; print(torch.__version__)')
if [ -z "$GPU" ] && [ "${GPU_CHECK_ALLOW_CPU:-0}" != 1 ]; then
    echo "gpu_check: no CUDA device here (torch $TORCH)"; exit 1
fi
DEV=cuda; [ -z "$GPU" ] && { DEV=cpu; GPU="no GPU (dry run)"; }

# 1. the whole suite, on whatever device --device auto picks (the GPU)
t0=$SECONDS
# shellcheck disable=SC2086
"$PY" -m pytest -q -p no:cacheprovider -o addopts="" -rfE ${GPU_CHECK_TESTS:-} >"$LOGS/pytest.log" 2>&1
SUITE_RC=$?
SUITE=$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed)' "$LOGS/pytest.log" | tail -1 | tr -d '=' | xargs)
SUITE_S=$((SECONDS - t0))

# 2. the pipeline end to end on the GPU, synthetic CIFAR-shaped data
W=$(mktemp -d)
D=synthetic:3x32x32
STEPS=(
  "train --model resnet20 --data $D --epochs 3 --lr 0.05 --device $DEV --no-progress -o $W/m.pt"
  "prune $W/m.pt --method lamp --sparsity 0.8 --gradual --mask-every 2 --retrain-epochs 2 --distill --device $DEV --no-progress -o $W/p.pt"
  "quantize $W/p.pt --bits auto:4 --finetune-epochs 1 --device $DEV --no-progress -o $W/q.pt"
  "encode $W/q.pt -o $W/m.dc"
  "decode $W/m.dc -o $W/d.pt"
  "eval $W/m.dc --device $DEV"
  "compress $W/m.pt --method global --sparsity 0.7 --retrain-epochs 1 --finetune-epochs 1 --device $DEV --no-progress -o $W/c.dc"
  "report $W/m.dc --layers"
)
ok=0; n=${#STEPS[@]}
: >"$LOGS/cli.log"
for s in "${STEPS[@]}"; do
    echo "\$ deepcomp $s" >>"$LOGS/cli.log"
    # shellcheck disable=SC2086
    if "$PY" -m deepcomp $s >>"$LOGS/cli.log" 2>&1; then ok=$((ok + 1)); else echo "FAILED" >>"$LOGS/cli.log"; fi
done
# data-parallel training under torchrun, NCCL on the GPU (one process: one GPU here)
n=$((n + 1))
echo "\$ torchrun --nproc_per_node 1 -m deepcomp train ..." >>"$LOGS/cli.log"
if "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m deepcomp train --model resnet20 \
      --data $D --epochs 1 --device $DEV -o "$W/ddp.pt" --no-progress >>"$LOGS/cli.log" 2>&1; then
    ok=$((ok + 1))
fi
rm -rf "$W"

# 3. throughput of the retraining loop against a bare loop (CIFAR-sized: 50,000 images)
"$PY" tools/bench_train_loop.py --data $D --device $DEV --steps 0 --images "${GPU_CHECK_BENCH_IMAGES:-50000}" --rounds 2 \
    >"$LOGS/bench.log" 2>&1
BENCH=$(tail -1 "$LOGS/bench.log")

echo "gpu_check: $GPU, torch $TORCH: suite ${SUITE:-did not run} (${SUITE_S}s); cli $ok/$n steps; bench: $BENCH"
[ $SUITE_RC -eq 0 ] && [ $ok -eq $n ]
