#!/usr/bin/env python3
"""The results table of tools/gpu/run.sh: one row per results/*.json (bench_gpu_step or
bench/gpu_official_step.py), then cvx against the official stack for each pair
(cvx-X / official-X). Markdown on stdout, ready for bench/RESULTS.md.

usage: tools/gpu/table.py RESULTS_DIR
"""
import json
import pathlib
import sys


def number(value, digits=2):
    if value is None or (isinstance(value, (int, float)) and value < 0):
        return "n/a"
    return f"{value:.{digits}f}"


def clip(r):
    if "frames" not in r:
        return "?"
    return f"{r['frames']}x{r['height']}x{r['width']}"


def main():
    folder = pathlib.Path(sys.argv[1])
    results = {}
    for path in sorted(folder.glob("*.json")):
        try:
            results[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            results[path.stem] = {"error": f"unreadable: {e}"}
    if not results:
        print("(no results)")
        return
    device = next((r.get("device") or r.get("gpu") for r in results.values() if r.get("device") or r.get("gpu")), "?")
    print(f"Device: {device}\n")
    print("| run | stack | model | clip | training | sharding | ranks (sequence) | step s (median) | executed TFLOP/s "
          "| MFU | peak memory GiB | planned GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    vae = {n: r for n, r in results.items() if r.get("benchmark") == "vae_encode"}
    results = {n: r for n, r in results.items() if n not in vae}
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | {r.get('stack', '?')} | failed: {str(r['error'])[:120]} |||||||||| ")
            continue
        stack = r.get("stack", "?")
        model = r.get("variant", r.get("model", "?"))
        training = r.get("training_type", "lora") + (f" r{r['lora_rank']}" if r.get("lora_rank") else "")
        ranks = f"{r.get('world', 1)} ({r.get('sequence', 1)})"
        peak = r.get("peak_memory_gib", r.get("peak_allocated_gib"))
        print(f"| {name} | {stack} | {model} | {clip(r)} | {training} | {r.get('sharding', 'none (DDP)')} | {ranks} "
              f"| {number(r.get('step_seconds_median'), 3)} | {number(r.get('tflops_executed'), 1)} "
              f"| {number(r.get('mfu'), 3)} | {number(peak)} | {number(r.get('planned_memory_gib'))} |")
    pairs = [(n, "official-" + n[len("cvx-"):]) for n in results if n.startswith("cvx-")]
    pairs = [(a, b) for a, b in pairs if b in results and "error" not in results[a] and "error" not in results[b]]
    if pairs:
        print("\n| comparison | official / cvx step time | cvx / official peak memory |")
        print("|---|---|---|")
        for a, b in pairs:
            ra, rb = results[a], results[b]
            time_ratio = rb["step_seconds_median"] / ra["step_seconds_median"] if ra.get("step_seconds_median") else None
            memory_ratio = (ra["peak_memory_gib"] / rb["peak_allocated_gib"]
                            if rb.get("peak_allocated_gib") else None)
            print(f"| {a[len('cvx-'):]} | {number(time_ratio)} | {number(memory_ratio)} |")
    if vae:
        vae_table(vae)


def vae_table(vae):
    print("\n| run | VAE | clip | dtype | tiling | s/clip (median) | peak memory GiB |")
    print("|---|---|---|---|---|---|---|")
    for name, r in vae.items():
        if "error" in r:
            print(f"| {name} | failed: {str(r['error'])[:120]} ||||||")
            continue
        print(f"| {name} | {r['variant']} | {clip(r)} | {r['dtype']} | {r['tiling']} "
              f"| {number(r['seconds_per_clip_median'], 3)} | {number(r['peak_memory_gib'])} |")


if __name__ == "__main__":
    main()
