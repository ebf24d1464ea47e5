#!/usr/bin/env bash
# The GPU suite: the CUDA tests, the loss benchmark and the CLIP throughput benchmark on one GPU, in <= 8 minutes.
#
#   benchmarks/gpu_suite.sh [--cpu-smoke] [OUTPUT_DIR]
#
# OUTPUT_DIR: the first argument, else $OUT, else benchmarks/results/gpu_suite/. It receives
#   environment.txt    the card (nvidia-smi), torch and CUDA versions
#   pytest_gpu.xml/.log  `pytest -m gpu` (tests/test_gpu.py and any other test marked gpu)
#   loss_bench.json/.md  symmetric InfoNCE forward + backward, bf16 inputs, fp32 logits, N up to 65536, d = 768:
#                        mmcontrast tiled / plain vs open_clip ClipLoss, time and peak GPU memory (OOM recorded)
#   clip/results.json    CLIP training throughput, mmcontrast's engine vs open_clip's train_one_epoch, bf16
#   parts.tsv            each part's exit status and seconds (124: its time budget ran out)
#   summary.md           the one-screen summary printed at the end
# A part that fails or runs out of time is recorded and the suite goes on. Budgets sum to 7.5 minutes; the whole
# suite took about 2 minutes on an H200 (docs/gpu-suite.md).
#
# --cpu-smoke runs the same parts on the CPU with tiny sizes (tests/test_gpu_suite.py does, in `make test`): the
# CUDA tests then report skipped.
#
# GPU_TESTS: the test files or folders `pytest -m gpu` collects (default: tests, every test marked gpu).
# Python: $PYTHON, else .venv/bin/python. Without a .venv the script runs `make install` first, which needs the
# package index (or a pip cache / wheelhouse): on an offline machine bring the .venv along.
set -u
cd "$(dirname "$0")/.."

SMOKE=0
if [ "${1:-}" = "--cpu-smoke" ]; then
    SMOKE=1
    shift
fi
OUT_DIR="${1:-${OUT:-benchmarks/results/gpu_suite}}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [ -z "${PYTHON:-}" ] && [ ! -x .venv/bin/python ]; then
    echo "no .venv: running make install (needs the package index)"
    make install >"$OUT_DIR/install.log" 2>&1 || echo "make install failed: see $OUT_DIR/install.log"
fi
PYTHON="${PYTHON:-.venv/bin/python}"

printf 'part\texit\tseconds\tbudget\n' >"$OUT_DIR/parts.tsv"
# run_part NAME BUDGET_SECONDS COMMAND...: stdout and stderr to NAME.log, the status and time to parts.tsv
run_part() {
    local name="$1" budget="$2"
    shift 2
    echo "== $name (budget ${budget} s): $*"
    local start=$SECONDS
    timeout --kill-after=10 "$budget" "$@" >"$OUT_DIR/$name.log" 2>&1
    local status=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" "$budget" >>"$OUT_DIR/parts.tsv"
    echo "   exit $status after $((SECONDS - start)) s (log: $OUT_DIR/$name.log)"
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host cores: $(nproc)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi: not available"
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1
    "$PYTHON" -c 'import open_clip; print("open_clip", open_clip.__version__)' 2>&1
} >"$OUT_DIR/environment.txt"
cat "$OUT_DIR/environment.txt"

if [ "$SMOKE" = 1 ]; then
    LOSS_ARGS=(--device cpu --sizes 128 300 --dim 32 --chunk-size 64 --repeats 1)
    CLIP_ARGS=(--device cpu --precision bf16 --model tiny --batch-size 256 --epochs 1)
    TEST_BUDGET=120 LOSS_BUDGET=60 CLIP_BUDGET=150
else
    LOSS_ARGS=(--device cuda --dtype bf16 --sizes 4096 16384 32768 65536 --dim 768 --chunk-size 4096 --repeats 3)
    CLIP_ARGS=(--device cuda --precision bf16 --model base --batch-size 256 --epochs 15)
    TEST_BUDGET=150 LOSS_BUDGET=120 CLIP_BUDGET=180
fi

run_part pytest_gpu "$TEST_BUDGET" "$PYTHON" -m pytest -m gpu ${GPU_TESTS:-tests} -q -rs -p no:cacheprovider \
    --junitxml="$OUT_DIR/pytest_gpu.xml"
run_part loss_bench "$LOSS_BUDGET" "$PYTHON" benchmarks/gpu_loss_bench.py "${LOSS_ARGS[@]}" \
    --output "$OUT_DIR/loss_bench.json"
run_part clip_bench "$CLIP_BUDGET" "$PYTHON" benchmarks/clip_vs_open_clip.py "${CLIP_ARGS[@]}" \
    --output-dir "$OUT_DIR/clip"
rm -rf "$OUT_DIR"/clip/*/model "$OUT_DIR"/clip/*/checkpoints # the trained weights (600 MB a side): scored already

"$PYTHON" benchmarks/gpu_suite_summary.py "$OUT_DIR" | tee "$OUT_DIR/summary.md"
