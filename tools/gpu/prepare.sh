#!/usr/bin/env bash
# tools/gpu/prepare.sh — run HERE (a Debian bookworm machine with network to its archive), before a
# GPU session: puts into gpu_carry/ (git-ignored) what tools/gpu/run.sh needs on a GPU machine
# that has CUDA, CMake, ninja and a Python with torch but none of cvx's other dependencies and no
# network. Then carry it: the device tool's `carry: ["gpu_carry"]` (64 MiB in all with the tree).
#
#   gpu_carry/debs/      Debian packages (not unpacked: smaller) of what the GPU kit links: Boost.Log
#                        and ProgramOptions with their headers, OpenMPI, nlohmann-json, GoogleTest;
#                        run.sh unpacks each group only when the machine lacks it
#   gpu_carry/diffusers-v0.32.2.tar.gz  diffusers' src/diffusers (the official stack's transformer),
#                        from a git clone (DIFFUSERS_GIT, or the library mirror) or GitHub's tarball
#   gpu_carry/golden/    the golden cases the gpu tests read (transformer), with manifest and README
#   gpu_carry/MANIFEST   what is there, with sizes
#
# usage: tools/gpu/prepare.sh [--no-debs]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/gpu_carry"
golden="${CVX_GOLDEN_DIR:-$root/../shared/golden}"
diffusers_git="${DIFFUSERS_GIT:-/work/.mirror/huggingface+diffusers/repo}"
diffusers_tag=v0.32.2
with_debs=1
[[ "${1:-}" == "--no-debs" ]] && with_debs=0

mkdir -p "$out"
# ---- 1. Debian packages, in groups run.sh checks one by one (group: packages).
declare -A groups=(
  [boost]="libboost1.74-dev libboost-log1.74-dev libboost-log1.74.0 libboost-program-options1.74-dev
           libboost-program-options1.74.0 libboost-thread1.74.0 libboost-filesystem1.74.0 libboost-atomic1.74.0
           libboost-chrono1.74.0 libboost-date-time1.74.0 libboost-system1.74-dev libboost-system1.74.0
           libboost-thread1.74-dev libboost-filesystem1.74-dev libboost-atomic1.74-dev libboost-chrono1.74-dev
           libboost-date-time1.74-dev libboost-regex1.74-dev"
  [mpi]="libopenmpi-dev libopenmpi3 openmpi-common openmpi-bin libpmix2 libhwloc15 libevent-core-2.1-7
         libevent-pthreads-2.1-7 libevent-2.1-7 libfabric1 libucx0 libnuma1 libibverbs1 librdmacm1 libpsm2-2
         libpsm-infinipath1 libnl-3-200 libnl-route-3-200 libltdl7 libmunge2 libxnvctrl0"
  [json]="nlohmann-json3-dev"
  [gtest]="libgtest-dev libgmock-dev googletest"
)
if [[ $with_debs == 1 ]]; then
  for group in "${!groups[@]}"; do
    mkdir -p "$out/debs/$group"
    # shellcheck disable=SC2086
    (cd "$out/debs/$group" && apt-get download ${groups[$group]} 2>&1 | grep -v "^W: Download is performed unsandboxed" || true)
    for package in ${groups[$group]}; do
      ls "$out/debs/$group/${package}_"*.deb >/dev/null 2>&1 || echo "prepare.sh: WARNING: no package $package" >&2
    done
  done
fi

# ---- 2. diffusers v0.32.2 (source only: the transformer, its embeddings and attention), kept as
# a tarball (2.5 MB instead of 15 unpacked); run.sh unpacks it.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [[ -d "$diffusers_git" ]] && git -C "$diffusers_git" rev-parse -q --verify "$diffusers_tag^{commit}" >/dev/null; then
  git -C "$diffusers_git" archive "$diffusers_tag" src/diffusers | tar -x -C "$tmp"
else
  mkdir -p "$tmp/src"
  curl -fsSL "https://github.com/huggingface/diffusers/archive/refs/tags/$diffusers_tag.tar.gz" |
    tar -xz -C "$tmp" --strip-components=1 "diffusers-${diffusers_tag#v}/src/diffusers"
fi
test -f "$tmp/src/diffusers/models/transformers/cogvideox_transformer_3d.py"
rm -rf "$out/diffusers"
tar -czf "$out/diffusers-$diffusers_tag.tar.gz" -C "$tmp" src/diffusers

# ---- 3. The golden cases the gpu tests read (CVX_GOLDEN_DIR points here on the GPU machine).
rm -rf "$out/golden" && mkdir -p "$out/golden"
cp "$golden/manifest.json" "$golden/README.md" "$out/golden/"
cp -r "$golden/transformer" "$out/golden/"

# ---- 4. What travels, and the limit.
(cd "$out" && find . -type f -printf '%s %p\n' | sort -k2) > "$out/MANIFEST"
total=$(du -sb "$out" | cut -f1)
tree=$(cd "$root" && git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "gpu_carry: $((total / 1048576)) MiB (+ working tree $((tree / 1048576)) MiB); limit 64 MiB in all"
if (( total + tree > 60 * 1048576 )); then
  echo "prepare.sh: gpu_carry is too large to carry" >&2
  exit 1
fi
