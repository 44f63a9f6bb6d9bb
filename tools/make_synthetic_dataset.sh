#!/usr/bin/env bash
# Writes a small synthetic dataset in the official list format: N FFmpeg test-pattern clips
# (H.264 mp4), prompts.txt, videos.txt, and (with --images) first frames as PNG + images.txt.
# usage: tools/make_synthetic_dataset.sh OUT_DIR [NUM_CLIPS=4] [WIDTHxHEIGHT=128x96] [FRAMES=17] [--images]
set -euo pipefail
out=${1:?usage: make_synthetic_dataset.sh OUT_DIR [NUM_CLIPS] [WxH] [FRAMES] [--images]}
num=${2:-4}; size=${3:-128x96}; frames=${4:-17}; images=${5:-}
patterns=(testsrc2 smptebars rgbtestsrc mandelbrot testsrc yuvtestsrc)
subjects=("a test pattern with a moving clock" "colour bars on a screen" "red green and blue stripes"
          "a fractal zoom" "a numbered test card" "a gradient test card")
mkdir -p "$out/videos"
: > "$out/prompts.txt"; : > "$out/videos.txt"
[ "$images" = "--images" ] && { mkdir -p "$out/images"; : > "$out/images.txt"; }
for ((i = 0; i < num; i++)); do
  p=${patterns[$((i % ${#patterns[@]}))]}
  name=$(printf "clip_%03d" "$i")
  ffmpeg -loglevel error -y -f lavfi -i "$p=size=$size:rate=8" -frames:v "$frames" \
    -c:v libx264 -pix_fmt yuv420p "$out/videos/$name.mp4"
  echo "${subjects[$((i % ${#subjects[@]}))]}, clip $i" >> "$out/prompts.txt"
  echo "videos/$name.mp4" >> "$out/videos.txt"
  if [ "$images" = "--images" ]; then
    ffmpeg -loglevel error -y -i "$out/videos/$name.mp4" -frames:v 1 "$out/images/$name.png"
    echo "images/$name.png" >> "$out/images.txt"
  fi
done
echo "synthetic dataset: $num clips of $frames frames at $size in $out"
