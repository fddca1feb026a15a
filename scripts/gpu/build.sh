#!/bin/bash
# Builds the CUDA `autonomy` binary and the CUDA test binary on a machine WITHOUT a GPU, and
# packs them with the training set into .gpu/ (git-ignored) for a lent GPU machine (see
# scripts/gpu/run.sh). The CUDA 13.0 compiler, headers and libraries come from NVIDIA's PyPI
# wheels (nothing else is installed); the driver library is a stub that only satisfies the
# linker: the real one is loaded on the GPU machine. Kernels are built for sm_90 (H100/H200).
set -euo pipefail
cd "$(dirname "$0")/../.."
CUDA=${CUDA_ROOT:-/opt/cuda13}
TOOLKIT=$CUDA/nvidia/cu13
if [ ! -x "$TOOLKIT/bin/nvcc" ]; then
  wheels=$(mktemp -d)
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$wheels" \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" \
    "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-cuda-nvrtc==13.0.*" \
    "nvidia-cublas==13.0.*" "nvidia-curand"
  for w in "$wheels"/*.whl; do unzip -q -o "$w" -d "$CUDA"; done
  rm -rf "$wheels"
fi
# Unversioned names for the linker, and a stub libcuda.so with every driver entry point the
# cudarc bindings name (the GPU machine's driver provides the real ones).
ln -sfn lib "$TOOLKIT/lib64"
for l in cublas cublasLt cudart nvrtc; do ln -sf "lib$l.so.13" "$TOOLKIT/lib/lib$l.so"; done
ln -sf libcurand.so.10 "$TOOLKIT/lib/libcurand.so"
bindings=$(ls -d ~/.cargo/registry/src/*/cudarc-*/src/driver/sys/mod.rs | tail -1)
grep -ho "pub unsafe fn cu[A-Za-z0-9_]*" "$bindings" | sed 's/pub unsafe fn //' | sort -u |
  sed 's/.*/int &(void) { return 999; }/' > "$CUDA/cuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$TOOLKIT/lib/libcuda.so" "$CUDA/cuda_stub.c"

export CUDA_HOME=$TOOLKIT PATH=$TOOLKIT/bin:$PATH CUDA_COMPUTE_CAP=90 LIBRARY_PATH=$TOOLKIT/lib
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
cargo build --release -p autonomy-pipeline --features cuda --bin autonomy
test_binary=$(cargo test --release -p autonomy-pipeline --features cuda --test cuda --no-run \
  --message-format=json | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda" and m.get("executable"):
        print(m["executable"])')

mkdir -p .gpu
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
strip -o .gpu/autonomy "$CARGO_TARGET_DIR/release/autonomy"
strip -o .gpu/cuda-test "$test_binary"
xz -9 -T2 -f .gpu/autonomy .gpu/cuda-test
if [ -f .autonomy/dataset/manifest.jsonl ]; then
  tar -C .autonomy -czf .gpu/dataset.tar.gz dataset
else
  echo "no .autonomy/dataset: run \`autonomy dataset --out .autonomy/dataset\` to train on the GPU" >&2
fi
du -ch .gpu/* | tail -1
