#!/usr/bin/env bash
# tools/gpu/run.sh — run ON THE GPU MACHINE, in the repository root, with gpu_carry/ (from
# tools/gpu/prepare.sh) carried along. Builds the GPU kit (CMake -DCVX_GPU_KIT=ON: the transformer,
# LoRA, dist and the training step, without FFmpeg, HDF5, protobuf or sentencepiece) against the
# libtorch inside the machine's PyTorch, runs the gpu tests and the benchmarks (cvx's bench_gpu_step
# and the official stack's bench/gpu_official_step.py, same GPU, same run) and prints a table last.
#
# Everything goes to $OUT (the device tool's folder) or gpu_out/: logs/<stage>.log, results/*.json,
# env.txt, table.md. The build stays in build-gpu/ (ignored; kept between calls on a warm machine).
# A failing stage is logged and the next one still runs; the table is rewritten after every
# benchmark, so a run cut short still returns what it measured.
#
# usage: tools/gpu/run.sh [STAGE...]   stages: env deps build test bench-5b bench-15 bench-memory
#        bench-vae (default: all, in that order); smoke = the plumbing on a machine without a GPU (CPU, tiny
#        sizes: CVX_TORCH_CMAKE_PREFIX names a libtorch when python3 has no torch).
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
out="${OUT:-$root/gpu_out}"
carry="$root/gpu_carry"
build="$root/build-gpu"
work="${CVX_GPU_WORK:-$root/build-gpu/_deps}"
prefix="$work/prefix"
mkdir -p "$out/logs" "$out/results" "$work"
stages=("$@")
[[ ${#stages[@]} == 0 ]] && stages=(env deps build test bench-5b bench-15 bench-memory bench-vae)
device=cuda
if [[ " ${stages[*]} " == *" smoke "* ]]; then
  device=cpu
  stages=(env deps build test smoke-bench)
  export CVX_GPU_TESTS_ON_CPU=1
fi

log() { echo "[run.sh $(date +%H:%M:%S)] $*"; }
# stage NAME COMMAND...: runs COMMAND with its output in logs/NAME.log; on failure shows its tail.
stage() {
  local name="$1" start rc
  shift
  start=$(date +%s)
  log "$name ..."
  ("$@") >"$out/logs/$name.log" 2>&1  # a subshell: the stage's shell options stay its own
  rc=$?
  log "$name: exit $rc after $(($(date +%s) - start)) s"
  if [[ $rc != 0 ]]; then tail -n 25 "$out/logs/$name.log" | sed 's/^/    /'; fi
  return $rc
}

torch_prefix() {
  if [[ -n "${CVX_TORCH_CMAKE_PREFIX:-}" ]]; then echo "$CVX_TORCH_CMAKE_PREFIX"; return; fi
  python3 -c 'import torch; print(torch.utils.cmake_prefix_path)'
}

do_env() {
  set -x
  date -u
  cat /etc/os-release
  uname -a
  nproc
  free -g
  nvidia-smi || true
  nvcc --version || ls /usr/local/cuda*/bin/nvcc || true
  cmake --version
  ninja --version
  g++ --version || true
  clang++ --version || true
  python3 -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
torch.backends.cudnn.version(), "nccl", torch.cuda.nccl.version() if torch.cuda.is_available() else None,
"cxx11abi", torch.compiled_with_cxx11_abi(), torch.utils.cmake_prefix_path, sys.version)' || true
  python3 -c 'import transformers, peft, accelerate, safetensors; print("transformers", transformers.__version__,
"peft", peft.__version__, "accelerate", accelerate.__version__)' || true
  python3 -c 'import nvidia.nccl as n; print("pip nccl", list(n.__path__))' || true
  dpkg -l 2>/dev/null | grep -E "libboost|openmpi|nlohmann|libgtest|libhdf5|libavcodec|sentencepiece" || true
  ls /usr/local/cuda/include/nccl.h /usr/include/nccl.h 2>/dev/null || true
}

# A group of carried packages is unpacked into the prefix only when the machine lacks it.
have_group() {
  case "$1" in
    boost) [[ -f /usr/include/boost/log/core.hpp ]] && ls /usr/lib/x86_64-linux-gnu/libboost_log.so >/dev/null 2>&1 ;;
    mpi) ls /usr/include/x86_64-linux-gnu/openmpi/mpi.h /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h \
      /usr/include/mpi.h >/dev/null 2>&1 ;;
    json) [[ -f /usr/include/nlohmann/json.hpp ]] ;;
    gtest) [[ -f /usr/include/gtest/gtest.h ]] && ls /usr/lib/x86_64-linux-gnu/libgtest.a >/dev/null 2>&1 ;;
  esac
}

unpack_deb() {
  if command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$1" "$prefix"
  else
    local tmp
    tmp="$(mktemp -d)"
    (cd "$tmp" && ar x "$1" && tar -xf data.tar.* -C "$prefix")
    rm -rf "$tmp"
  fi
}

do_deps() {
  set -e
  mkdir -p "$prefix"
  : >"$work/unpacked"
  for group in boost mpi json gtest; do
    if [[ -z "${CVX_GPU_FORCE_CARRIED:-}" ]] && have_group "$group"; then
      echo "$group: the machine's own"
      continue
    fi
    echo "$group: unpacking the carried packages"
    for deb in "$carry/debs/$group"/*.deb; do unpack_deb "$deb"; done
    echo "$group" >>"$work/unpacked"
  done
  rm -rf "$work/diffusers" && mkdir -p "$work/diffusers"
  tar -xzf "$carry"/diffusers-*.tar.gz -C "$work/diffusers"
  # NCCL: the one torch itself loads (the pip package), so one libnccl.so.2 is in the process.
  rm -rf "$work/nccl"
  local pip_nccl
  pip_nccl="$(python3 -c 'import nvidia.nccl as n; print(list(n.__path__)[0])' 2>/dev/null || true)"
  if [[ -n "$pip_nccl" && -f "$pip_nccl/include/nccl.h" ]]; then
    mkdir -p "$work/nccl/lib"
    ln -s "$pip_nccl/include" "$work/nccl/include"
    ln -s "$(ls "$pip_nccl"/lib/libnccl.so* | head -1)" "$work/nccl/lib/libnccl.so"
    echo "NCCL: $pip_nccl"
  fi
  cat "$work/unpacked"
}

unpacked() { grep -qx "$1" "$work/unpacked" 2>/dev/null; }

runtime_env() {
  local lib="$prefix/usr/lib/x86_64-linux-gnu"
  export LD_LIBRARY_PATH="$lib:${LD_LIBRARY_PATH:-}"
  if unpacked mpi; then
    export OPAL_PREFIX="$prefix/usr"
    export OMPI_MCA_ess_singleton_isolated=1  # no orted for a singleton
  fi
  export CVX_GOLDEN_DIR="$carry/golden"
  export PYTHONPATH="$work/diffusers/src:${PYTHONPATH:-}"
}

do_build() {
  set -e
  runtime_env  # the linker finds the carried libraries' own dependencies on LD_LIBRARY_PATH
  local args=(-G Ninja -DCVX_GPU_KIT=ON -DCMAKE_BUILD_TYPE=Release -DCVX_BUILD_FUZZERS=OFF)
  local prefixes
  prefixes="$(torch_prefix)"
  local lib="$prefix/usr/lib/x86_64-linux-gnu"
  if unpacked boost; then args+=(-DBoost_DIR="$lib/cmake/Boost-1.74.0" -DBoost_NO_SYSTEM_PATHS=ON); fi
  if unpacked json; then args+=(-Dnlohmann_json_DIR="$prefix/usr/share/cmake/nlohmann_json"); fi
  if unpacked gtest; then args+=(-DGTest_DIR="$lib/cmake/GTest"); fi
  if unpacked mpi; then
    # No wrapper compiler: the header folder and library named directly.
    args+=(-DMPI_SKIP_COMPILER_WRAPPER=ON -DMPI_C_COMPILER=MPI_C_COMPILER-NOTFOUND
      -DMPI_C_HEADER_DIR="$lib/openmpi/include" -DMPI_C_LIB_NAMES=mpi -DMPI_mpi_LIBRARY="$lib/openmpi/lib/libmpi.so")
  fi
  if [[ $device == cuda ]]; then
    args+=(-DCVX_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DTORCH_CUDA_ARCH_LIST=9.0)
    [[ -d "$work/nccl" ]] && export NCCL_HOME="$work/nccl"
    [[ -x /usr/local/cuda/bin/nvcc ]] && args+=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
  fi
  cmake -S "$root" -B "$build" -DCMAKE_PREFIX_PATH="$prefixes" "${args[@]}"
  ninja -C "$build" -j "$(nproc)"
}

do_test() {
  runtime_env
  ctest --test-dir "$build" -L gpu --output-on-failure --timeout 300
}

table() { python3 "$root/tools/gpu/table.py" "$out/results" >"$out/table.md" 2>>"$out/logs/table.log" || true; }

# measure NAME TIMEOUT COMMAND...: one benchmark run writing results/NAME.json (COMMAND gets
# --json), then the table rewritten.
measure() {
  local name="$1" limit="$2"
  shift 2
  runtime_env
  stage "$name" timeout "$limit" "$@" --json "$out/results/$name.json"
  table
}
# cvx's step (bench_gpu_step), the VAE encode (bench_gpu_vae), the official stack's step
# (diffusers + PEFT + torch, same GPU): NAME ARGS...
bench() { measure "$1" 400 "$build/bench/bench_gpu_step" --device "$device" "${@:2}"; }
vae() { measure "$1" 300 "$build/bench/bench_gpu_vae" --device "$device" "${@:2}"; }
official() { measure "$1" 400 python3 "$root/bench/gpu_official_step.py" --diffusers "$work/diffusers/src" "${@:2}"; }

for s in "${stages[@]}"; do
  case "$s" in
    env) (do_env) >"$out/env.txt" 2>&1; grep -E "^torch|NVIDIA|release|PRETTY" "$out/env.txt" | head -5 ;;
    deps) stage deps do_deps ;;
    build) stage build do_build || { log "build failed: see $out/logs/build.log"; break; } ;;
    test) stage test do_test ;;
    bench-5b)
      bench cvx-5b-lora --variant 5b --frames 49 --height 480 --width 720 --steps 5 --warmup 2
      official official-5b-lora --model 5b --steps 5 --warmup 2 ;;
    bench-15)
      bench cvx-15-lora --variant 1.5-t2v --frames 81 --height 768 --width 1360 --steps 3 --warmup 1
      official official-15-lora --model 1.5-5b --steps 3 --warmup 1 ;;
    bench-memory)
      for cfg in "lora full" "lora grad_optimizer" "sft full"; do
        set -- $cfg
        bench "cvx-15-$1-$2-w8" --variant 1.5-t2v --frames 81 --height 768 --width 1360 --world 8 \
          --training_type "$1" --sharding "$2" --steps 2 --warmup 1
      done
      bench cvx-15-161f-lora-w8-sp8 --variant 1.5-t2v --frames 161 --height 768 --width 1360 --world 8 \
        --sequence 8 --steps 2 --warmup 1 ;;
    bench-vae)
      vae vae-5b-49f --variant 5b --frames 49 --height 480 --width 720
      vae vae-15-81f --variant 1.5-t2v --frames 81 --height 768 --width 1360 ;;
    smoke-bench)
      bench smoke-5b --variant 5b --layers 2 --frames 9 --height 64 --width 96 --steps 1 --warmup 1
      bench smoke-15-sp --variant 1.5-t2v --layers 2 --frames 9 --height 64 --width 96 --world 8 --sequence 8 \
        --steps 1 --warmup 1
      vae vae-smoke --variant 5b --frames 9 --height 64 --width 96 --dtype fp32 --runs 1
      official official-smoke --model 5b --steps 1 --warmup 0 ;;
    *) log "unknown stage $s" ;;
  esac
done
table
cat "$out/table.md" 2>/dev/null
