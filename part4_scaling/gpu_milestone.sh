#!/bin/bash
# The Part 4 GPU milestone, as run on one H100 through the course's device tool (results/README.md):
#   bash part4_scaling/gpu_milestone.sh OUT_DIR
# 1. the 10-50M-parameter model on the Gutenberg corpus (parts A + B), bf16, torch.compile
# 2. byte-level tinyshakespeare: time to val loss 1.47
# 3. a profile of 10 compiled training steps (where the GPU time goes)
# Part B of the corpus is rebuilt beforehand with: python part4_scaling/prepare_data.py --source FOLDER --rest
# OUT_DIR must be new: train.py refuses to overwrite an earlier run's results.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/gpu_milestone}
if [ ! -f data/gutenberg_train_b.txt.xz ]; then  # checked before the first run, not after it
    echo "error: data/gutenberg_train_b.txt.xz not found; rebuild it: python part4_scaling/prepare_data.py" \
         "--source FOLDER_WITH_gutenberg_fiction_train.txt.xz --rest (see data/SOURCES.md)" >&2
    exit 1
fi
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/hardware.txt"
python3 -c "import torch, platform; print('python', platform.python_version(), '| torch', torch.__version__)" | tee -a "$OUT/hardware.txt"
python3 part4_scaling/train.py --preset shakespeare_gpu --out_dir "$OUT/shakespeare" 2>&1 | tee "$OUT/shakespeare.log" \
    | grep -E "parameters|reached|best val"
python3 part4_scaling/train.py --preset gpu --out_dir "$OUT/gutenberg" 2>&1 | tee "$OUT/gutenberg.log" \
    | grep -E "parameters|MFU|val|best val|occur" | grep -E "parameters|step +(1|1000|2000|3000|4000|5000) |val|occur"
python3 part4_scaling/profile_gpu.py --preset gpu --out_dir "$OUT/profile" 2>&1 | tee "$OUT/profile.txt" | tail -25
