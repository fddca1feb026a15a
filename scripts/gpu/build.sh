#!/bin/bash
# Builds the CUDA `autonomy` binary, the CUDA test binary and the Stable Diffusion bench on a
# machine WITHOUT a GPU (or, with CHECK=1, only type-checks them), and packs them into .gpu/
# (git-ignored) for a lent GPU machine, with what each run needs from the checkout:
# .gpu/house.tar.gz (the house model and the training set, for scripts/gpu/run.sh) and
# .gpu/sd.tar.gz (the tiny Stable Diffusion fixtures and
# bench.py, for scripts/gpu/run-sd.sh). The CUDA 13.0 compiler, headers and libraries come
# from NVIDIA's PyPI wheels (nothing else is installed); the driver library is a stub that
# only satisfies the linker: the real one is loaded on the GPU machine. Kernels are built for
# sm_90 (H100/H200); Autonomy's own Stable Diffusion kernels are compiled by NVRTC when first
# used. The test binary and the bench are built a second time with cuDNN's convolutions
# (`--features cudnn`: cuda-test-cudnn, sd-bench-cudnn), linked against cuDNN 9 from NVIDIA's
# wheel here and run against the GPU machine's own (PyTorch's).
#
# The checkout is larger than the device tool sends (64 MiB), so send .gpu alone: take every
# file out of the index and ignore it (`git rm -r -q --cached . && echo '/*' >>
# .git/info/exclude`), run with `carry` naming the .gpu files the run needs, then put both
# back (`git reset -q` and drop the line).
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
if ! find "$CUDA/nvidia" -name 'libcudnn.so.9' | grep -q .; then
  wheels=$(mktemp -d)
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 -d "$wheels" "nvidia-cudnn-cu13==9.*"
  for w in "$wheels"/*.whl; do unzip -q -o "$w" -d "$CUDA"; done
  rm -rf "$wheels"
fi
ln -sf "$(find "$CUDA/nvidia" -name 'libcudnn.so.9' | head -1)" "$TOOLKIT/lib/libcudnn.so"
# cudarc's sources (a fresh machine has not unpacked them: no default build needs them).
cargo fetch --quiet
bindings=$(ls -d ~/.cargo/registry/src/*/cudarc-*/src/driver/sys/mod.rs | tail -1)
grep -ho "pub unsafe fn cu[A-Za-z0-9_]*" "$bindings" | sed 's/pub unsafe fn //' | sort -u |
  sed 's/.*/int &(void) { return 999; }/' > "$CUDA/cuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$TOOLKIT/lib/libcuda.so" "$CUDA/cuda_stub.c"

export CUDA_HOME=$TOOLKIT PATH=$TOOLKIT/bin:$PATH CUDA_COMPUTE_CAP=90 LIBRARY_PATH=$TOOLKIT/lib
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
# CHECK=1: type-check every target with all of Autonomy's CUDA paths and stop (24 min cold on 2
# cores shared with other builds, after the toolkit's download; under a minute after a change):
# what a session without a GPU can do to keep the CUDA code compiling.
if [ "${CHECK:-}" = 1 ]; then
  exec cargo check -p autonomy-pipeline --features cudnn --all-targets
fi
cargo build --release -p autonomy-pipeline --features cuda --bin autonomy
# The executable cargo built for target `$1` with features `$2` (the rest: cargo's arguments).
executable() {
  local name=$1 features=$2; shift 2
  cargo "$@" -p autonomy-pipeline --features "$features" --no-run --message-format=json |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$name"
}
test_binary=$(executable cuda cuda test --release --test cuda)
bench_binary=$(executable stable_diffusion cuda bench --bench stable_diffusion)
test_cudnn=$(executable cuda cudnn test --release --test cuda)
bench_cudnn=$(executable stable_diffusion cudnn bench --bench stable_diffusion)

mkdir -p .gpu
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
strip -o .gpu/autonomy "$CARGO_TARGET_DIR/release/autonomy"
strip -o .gpu/cuda-test "$test_binary"
strip -o .gpu/sd-bench "$bench_binary"
strip -o .gpu/cuda-test-cudnn "$test_cudnn"
strip -o .gpu/sd-bench-cudnn "$bench_cudnn"
xz -9 -T2 -f .gpu/autonomy .gpu/cuda-test .gpu/sd-bench .gpu/cuda-test-cudnn .gpu/sd-bench-cudnn
house=(models/house)
if [ -f .autonomy/dataset/manifest.jsonl ]; then
  house+=(.autonomy/dataset)
else
  echo "no .autonomy/dataset: run \`autonomy dataset --out .autonomy/dataset\` to train on the GPU" >&2
fi
tar -czf .gpu/house.tar.gz "${house[@]}"
sd=pipeline/tests/fixtures/sd
tar -czf .gpu/sd.tar.gz scripts/sd-fixtures/bench.py \
  $sd/tiny-sd15/{model_index.json,scheduler,text_encoder,tokenizer,unet,vae,hypernetworks,controlnet,t2i-adapter} \
  $sd/{tiny-sd21,tiny-sd-turbo,tiny-sdxl} $sd/{tiny-sd15,tiny-sd21,tiny-sd-turbo,tiny-sdxl}.reference.safetensors \
  $sd/annotators $sd/{hypernetworks,controlnet,t2i-adapter,annotators,depth-anything,mlsd}.reference.safetensors
du -ch .gpu/* | tail -1
