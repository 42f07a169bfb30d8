#!/usr/bin/env bash
# The GPU checks, as one short script for a lent CUDA machine (CI has no GPU; these never run there).
#
#   bash bench/gpu_check.sh OUT_DIR [STEPS]       # STEPS: comma list, default env,pytest,ant,seeds,score
#
# Steps, each under its own time limit and logged to OUT_DIR/<step>.log, one line each in
# OUT_DIR/summary.txt (exit status, seconds):
#   env     torch / CUDA / transformers versions and the GPU's name
#   pytest  the GPU tests (tests/test_gpu.py, tests/test_hardware.py): bf16 training through the
#           CLI, CUDA and CPU scores alike, bf16 scoring keeps fp32 labels, batch limits from memory
#   ant     configs/ant-gpu.yaml on $ANT_DIR (whole encoder, 512 tokens, bf16) through accelerate launch
#   seeds   configs/libya-gpu.yaml on seeds/ (whole encoder, 512 tokens, bf16) through accelerate launch
#   score   python -m bench.run --only gpu: bf16 scoring speed with the seeds model
#   ant-b   configs/ant-gpu.yaml at a lower learning rate (4e-5) for 5 epochs, if time is left
# OUT_DIR/runs.tar.gz holds each run's reports, metrics and configs (no weights), OUT_DIR/logs.tar.gz
# the logs. The exit status is 1 when a step failed (named on the last line), else 0.
#
# A machine without the internet can take what it lacks from the working tree: wheels in .whl/
# (installed into /tmp/site, e.g. datasets) and the built embedded backbone as
# .carry/backbone.tar.xz (made by `tar -cJf` of ~/.cache/nabaa/backbones/<name>), ANT in .carry/ant.
set -u
OUT_DIR=${1:?usage: bash bench/gpu_check.sh OUT_DIR [STEPS]}
STEPS=${2:-env,pytest,ant,seeds,score,ant-b}
DEADLINE=${GPU_CHECK_SECONDS:-560}  # the whole script's budget; each step gets what is left of it
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
RUNS=${GPU_CHECK_RUNS:-/tmp/nabaa-gpu-runs}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export HF_HOME=${HF_HOME:-/tmp/nabaa-hf} NABAA_CACHE_DIR=${NABAA_CACHE_DIR:-/tmp/nabaa-cache}
export ANT_DIR=${ANT_DIR:-.carry/ant}
PY=${PYTHON:-python3}

if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -f .carry/backbone.tar.xz ]; then
  mkdir -p "$NABAA_CACHE_DIR/backbones" && tar -xJf .carry/backbone.tar.xz -C "$NABAA_CACHE_DIR/backbones"
fi

step() {  # step NAME CAP_SECONDS COMMAND...: runs within min(CAP, what is left of the deadline)
  local name=$1 cap=$2 left; shift 2
  case ",$STEPS," in *",$name,"*) ;; *) return 0 ;; esac
  left=$((DEADLINE - SECONDS - 15))
  if [ "$left" -lt 20 ]; then echo "$name skipped: no time left" | tee -a "$OUT_DIR/summary.txt"; return 0; fi
  [ "$cap" -gt "$left" ] && cap=$left
  local start=$SECONDS
  timeout --kill-after=10 "$cap" "$@" >"$OUT_DIR/$name.log" 2>&1
  local rc=$?
  [ "$rc" -eq 0 ] || FAILED="$FAILED $name"
  echo "$name rc=$rc $((SECONDS - start))s (limit ${cap}s)" | tee -a "$OUT_DIR/summary.txt"
}
FAILED=""

LAUNCH=("$PY" -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no
        --dynamo_backend no -m training.train)

step env 60 $PY -c "
import torch, transformers, accelerate, datasets, sys
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
      'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'datasets', datasets.__version__)
print('gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
      'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported())
"
step pytest 180 $PY -m pytest -q -p no:cacheprovider -rA tests/test_gpu.py tests/test_hardware.py
step ant 330 "${LAUNCH[@]}" --config configs/ant-gpu.yaml "output_dir=$RUNS/ant-gpu"
step seeds 150 "${LAUNCH[@]}" --config configs/libya-gpu.yaml "output_dir=$RUNS/libya-gpu"
step score 90 $PY -m bench.run --full --only gpu --model "$RUNS/libya-gpu/best"
step ant-b 330 "${LAUNCH[@]}" --config configs/ant-gpu.yaml train.learning_rate=4e-5 train.epochs=5 \
  "output_dir=$RUNS/ant-gpu-b"

# What comes back: reports (no weights) and the logs, packed outside OUT_DIR first, then moved in.
[ -f bench/out/results.json ] && cp -f bench/out/results.json "$OUT_DIR/bench_results.json"
PACK=$(mktemp -d)
if [ -d "$RUNS" ]; then
  tar -czf "$PACK/runs.tar.gz" --exclude='*.safetensors' --exclude='checkpoints' --exclude='*.pt' \
    -C "$(dirname "$RUNS")" "$(basename "$RUNS")" && mv "$PACK/runs.tar.gz" "$OUT_DIR/"
fi
tar -czf "$PACK/logs.tar.gz" -C "$OUT_DIR" . && mv "$PACK/logs.tar.gz" "$OUT_DIR/"
rmdir "$PACK" 2>/dev/null
if [ -n "$FAILED" ]; then echo "failed:$FAILED"; exit 1; fi
