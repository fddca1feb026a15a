#!/bin/bash
# Runs on a lent GPU machine (the `device` tool: `bash scripts/gpu/run.sh`, carry
# [".gpu/autonomy.xz", ".gpu/cuda-test.xz", ".gpu/house.tar.gz"]; see scripts/gpu/build.sh for
# sending .gpu alone), from what build.sh packed: the house model's CUDA tests (run-sd.sh runs
# the Stable Diffusion ones), the same sprite on CUDA and on the CPU,
# then (TRAIN_SECONDS > 0) a fine-tune of models/house sized to that many seconds by a probe,
# and `autonomy bench` of the result. Results land in $OUT: log.txt, the pictures, the new
# model.safetensors in 10 MB parts (cat them back together), MODEL.md and config.json.
set -u
exec > >(tee "$OUT/log.txt") 2>&1
T0=$(date +%s); el() { echo "[+$(( $(date +%s) - T0 ))s] $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
libs=$(dirname "$(find /opt /usr -name 'libcublas.so.13' 2>/dev/null | head -1)")
driver=$(dirname "$(find /usr /opt -name 'libcuda.so.1' 2>/dev/null | head -1)")
export LD_LIBRARY_PATH=$libs:$driver:${LD_LIBRARY_PATH:-}
xz -dc .gpu/autonomy.xz > /tmp/autonomy && chmod +x /tmp/autonomy
xz -dc .gpu/cuda-test.xz > /tmp/cuda-test && chmod +x /tmp/cuda-test
tar -xzf .gpu/house.tar.gz
A=/tmp/autonomy; D=.autonomy/dataset/manifest.jsonl
BATCH=${BATCH:-256}; LR=${LR:-0.0002}

el "tests"
CARGO_MANIFEST_DIR=$PWD/pipeline /tmp/cuda-test --test-threads=1 --nocapture --skip stable_diffusion
el "pictures"
$A --device cuda generate "red health potion" --seed 3 --size 128 -o "$OUT/potion-cuda.png"
$A --device cpu generate "red health potion" --seed 3 --size 128 -o "$OUT/potion-cpu.png"
[ "${TRAIN_SECONDS:-0}" -gt 0 ] || { el "done (no training asked)"; exit 0; }

el "probe"
probe() {
  local s; s=$(date +%s%N)
  $A --device cuda train --data $D --from models/house --out "/tmp/probe$1" --steps "$1" \
    --batch "$BATCH" --lr "$LR" > "/tmp/probe$1.log" 2>&1
  echo $(( ($(date +%s%N) - s) / 1000000 ))
}
ms40=$(probe 40); ms140=$(probe 140)
grep -q "model written" /tmp/probe140.log || { el "probe failed"; cat /tmp/probe140.log; exit 1; }
per=$(( (ms140 - ms40) / 100 )); per=$(( per > 1 ? per : 1 ))
steps=$(( (TRAIN_SECONDS * 1000 - (ms40 - 40 * per)) / per )); cooldown=$(( steps / 3 ))
el "probe: ${per} ms/step at batch $BATCH: $steps steps, cooldown $cooldown"
timeout -s INT $(( TRAIN_SECONDS + 60 )) $A --device cuda train --data $D --from models/house \
  --out /tmp/house --steps $steps --batch "$BATCH" --lr "$LR" --cooldown $cooldown \
  --checkpoint-every 100000 > /tmp/train.log 2>&1
echo "train exit $?"; tail -2 /tmp/train.log
el "trained"
split -b 10M /tmp/house/model.safetensors "$OUT/model.safetensors.part-"
cp /tmp/house/MODEL.md /tmp/house/config.json "$OUT/"
sha256sum /tmp/house/model.safetensors
timeout 90 $A --device cuda bench --model /tmp/house --data $D --docs /tmp/docs 2>&1 | grep -v '^\s*$'
el "done"
