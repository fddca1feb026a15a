#!/bin/bash
# Runs on a lent GPU machine (the `device` tool: `bash scripts/gpu/run-sd.sh`, carry
# [".gpu/cuda-test-cudnn.xz", ".gpu/sd-bench.xz", ".gpu/sd-bench-cudnn.xz", ".gpu/sd.tar.gz",
# ".whl"]; see scripts/gpu/build.sh for sending .gpu alone), from what build.sh packed: the
# Stable Diffusion CUDA tests (f16 against diffusers' references, seeds, CUDA vs CPU, each of
# Autonomy's own kernels against candle's operations) with cuDNN's convolutions (`cudnn`),
# then the Stable Diffusion bench, candle f16 against diffusers f16 on the same GPU, with
# candle's convolutions (`cuda`) and with cuDNN's (`cudnn`); with PROFILE=1 then Nsight
# Compute's time per kernel over about two SD 1.5 UNet steps (`cudnn` build). cuDNN is the
# machine's own, from its
# PyTorch. diffusers (and spandrel, for the upscaler bench) travel as wheels in .whl
# (`pip download --no-deps -d .whl diffusers spandrel`; the image has torch and transformers).
# Results land in $OUT/log.txt.
set -u
exec > >(tee "$OUT/log.txt") 2>&1
T0=$(date +%s); el() { echo "[+$(( $(date +%s) - T0 ))s] $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
libs=$(dirname "$(find /opt /usr -name 'libcublas.so.13' 2>/dev/null | head -1)")
driver=$(dirname "$(find /usr /opt -name 'libcuda.so.1' 2>/dev/null | head -1)")
cudnn=$(python3 -c 'import nvidia.cudnn as c; print(c.__path__[0] + "/lib")' 2>/dev/null ||
  dirname "$(find /usr /opt /root -name 'libcudnn.so.9' 2>/dev/null | head -1)")
echo "cuDNN: $cudnn"
export LD_LIBRARY_PATH=$libs:$driver:$cudnn:${LD_LIBRARY_PATH:-}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 1
tar -xzf .gpu/sd.tar.gz
for b in cuda-test-cudnn sd-bench sd-bench-cudnn; do
  xz -dc ".gpu/$b.xz" > "/tmp/$b" && chmod +x "/tmp/$b"
done
export CARGO_MANIFEST_DIR=$PWD/pipeline

el "tests"
/tmp/cuda-test-cudnn --test-threads=1 --nocapture stable_diffusion
el "bench: making the weights"
export AUTONOMY_BENCH_TORCH_DEVICE=cuda PYTHONUNBUFFERED=1
python3 scripts/sd-fixtures/bench.py make target/sd-bench || exit 1
el "bench, candle's convolutions (candle's half: PyTorch is timed once, with cudnn below)"
AUTONOMY_BENCH_PYTHON=true /tmp/sd-bench --device cuda
el "bench, cudnn"
/tmp/sd-bench-cudnn --device cuda
if python3 -c 'import spandrel' 2>/dev/null; then
  el "bench, upscalers (cudnn)"
  /tmp/sd-bench-cudnn --device cuda upscalers
else
  el "no spandrel wheel in .whl: the upscaler bench is skipped"
fi
[ "${PROFILE:-0}" = 1 ] || { el "done"; exit 0; }

el "profile"
# Past the weights' casts at load, into the timed UNet steps; the bench then stops at its
# PyTorch half (AUTONOMY_BENCH_PYTHON=true prints nothing), which is not needed here.
ncu=$(command -v ncu || find / -name ncu -type f -perm -u+x -not -path '/proc/*' 2>/dev/null | head -1)
AUTONOMY_BENCH_PYTHON=true timeout 150 "$ncu" --launch-skip 1200 --launch-count 3000 \
  --metrics gpu__time_duration.sum --csv --log-file /tmp/ncu.csv /tmp/sd-bench-cudnn --device cuda \
  > /tmp/ncu.out 2>&1 || tail -5 /tmp/ncu.out
python3 - <<'EOF'
import csv, collections
rows = [line for line in open("/tmp/ncu.csv") if line.startswith('"')]
total, count = collections.Counter(), collections.Counter()
for row in csv.DictReader(rows):
    name = row["Kernel Name"].split("(")[0][:60]
    scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}[
        row["Metric Unit"]
    ]
    total[name] += float(row["Metric Value"].replace(",", "")) * scale
    count[name] += 1
all_us = sum(total.values())
print(f"{sum(count.values())} kernels, {all_us / 1e3:.1f} ms on the GPU")
print("| kernel | launches | ms | share |")
for name, us in total.most_common(25):
    print(f"| {name} | {count[name]} | {us / 1e3:.2f} | {us / all_us:.1%} |")
EOF
el "done"
