#!/usr/bin/env bash
# Installs every Debian package cvx needs to build, test and run on a CPU machine.
# Idempotent: when everything is present it only checks (a couple of seconds).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache clang libclang-rt-14-dev clang-format-14 pkg-config
  libtorch-dev libopenblas0-openmp
  openmpi-bin libopenmpi-dev
  libhdf5-openmpi-dev hdf5-tools
  ffmpeg libavformat-dev libavcodec-dev libavutil-dev libswscale-dev
  libboost-log-dev libboost-program-options-dev
  libsentencepiece-dev sentencepiece
  nlohmann-json3-dev
  libprotobuf-dev protobuf-compiler python3-protobuf python3-matplotlib
  libgtest-dev googletest
  slurm-wlm munge  # the slurm-labelled tests start a one-node Slurm (tests/slurm/slurm_cluster.sh)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install_deps: done"
