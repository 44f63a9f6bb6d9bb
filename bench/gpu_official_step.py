#!/usr/bin/env python3
"""Official-stack half of the GPU step benchmark (cvx half: bench/gpu_step.cpp): one CogVideoX LoRA training step, timed on one GPU.

What it measures
    The LoRA training step of the official Python stack (diffusers v0.32.2 + PEFT + torch), set up
    the way diffusers' `examples/cogvideo/train_cogvideox_lora.py` sets it up, so that cvx's C++
    step (bench_gpu_step, bench/gpu_step.cpp) can be compared against it in the same run on
    the same card:

      * `CogVideoXTransformer3DModel` built from the released T2V config (CogVideoX-5b or
        CogVideoX1.5-5B), random weights, bf16, directly on the GPU;
      * frozen base, PEFT LoRA on to_q/to_k/to_v/to_out.0 (rank 128, alpha 64 by default), added
        with `transformer.add_adapter(LoraConfig(...))` as the example does;
      * gradient checkpointing (`enable_gradient_checkpointing()`) unless --no_checkpointing;
      * the forward under `torch.autocast(bf16)` with the output cast to fp32, which is what
        accelerate's `prepare(transformer)` does to the model under `--mixed_precision bf16`
        (--no_autocast runs the bare bf16 model instead);
      * batch 1: random latents [1, F, 16, h, w], random T5 embeddings [1, 226, 4096], a random
        integer timestep, the 3D RoPE tables built as diffusers' CogVideoX pipeline builds them;
      * step = forward, MSE loss in fp32, backward, grad-norm clipping (max 1.0, as the example
        and the official recipe), AdamW step on the LoRA parameters, zero_grad(set_to_none=True).

    It reports the median step time over --steps timed steps (after --warmup untimed ones), the
    peak CUDA memory of the timed steps, and executed TFLOP/s and MFU with the FLOP count cvx
    uses (src/train/step_flops.cpp: forward (+ recompute) + backward, attention's backward x2).

How it is run
    python3 bench/gpu_official_step.py --model 1.5-5b --diffusers build-gpu/_deps/diffusers/src --json out.json

    --diffusers names the folder that holds the `diffusers` package (the `src` folder of
    `git archive v0.32.2 src/diffusers`); it is put first on sys.path. Needs torch (CUDA build),
    peft, transformers, accelerate (not imported: its autocast wrapper is reproduced inline),
    safetensors; no network.

Output
    One line `RESULT {json}` on stdout (also written to --json). Failures (diffusers import,
    model build, CUDA out of memory, ...) give `RESULT {"stack": "official", "error": "..."}` and
    exit status 0, so that the calling benchmark goes on.

`--help` works without torch: torch and diffusers are imported only after the arguments are parsed.
"""

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time
import traceback

# Released T2V transformer configs (transformer/config.json of THUDM/CogVideoX-5b and
# THUDM/CogVideoX1.5-5B), every key spelled out. Sources: shared/spec/README.md ("Model variants
# and config values": the common values and the per-variant table), cross-checked with cvx's
# presets cogvideox_5b() / cogvideox15_5b() in src/model/transformer_config.cpp and the
# constructor defaults of CogVideoXTransformer3DModel in diffusers v0.32.2.
_COMMON = {
    "attention_head_dim": 64,
    "in_channels": 16,
    "out_channels": 16,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "time_embed_dim": 512,
    "ofs_embed_dim": None,  # 1.5-I2V only
    "text_embed_dim": 4096,
    "dropout": 0.0,
    "attention_bias": True,
    "patch_size": 2,
    "temporal_compression_ratio": 4,
    "max_text_seq_length": 226,
    "activation_fn": "gelu-approximate",
    "timestep_activation_fn": "silu",
    "norm_elementwise_affine": True,
    "norm_eps": 1e-5,
    "spatial_interpolation_scale": 1.875,
    "temporal_interpolation_scale": 1.0,
}

CONFIGS = {
    "5b": dict(
        _COMMON,
        num_attention_heads=48,
        num_layers=42,
        sample_width=90,
        sample_height=60,
        sample_frames=49,
        patch_size_t=None,
        patch_bias=True,
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=False,
    ),
    "1.5-5b": dict(
        _COMMON,
        num_attention_heads=48,
        num_layers=42,
        sample_width=300,
        sample_height=300,
        sample_frames=81,
        patch_size_t=2,
        patch_bias=False,  # the 1.5 patch embedding is an nn.Linear that ignores it (always has a bias)
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=False,
    ),
}

# Default pixel geometry (frames, height, width): the official training resolutions.
DEFAULT_GEOMETRY = {"5b": (49, 480, 720), "1.5-5b": (81, 768, 1360)}

VAE_SPATIAL = 8  # vae_scale_factor_spatial of both VAEs
VAE_TEMPORAL = 4  # vae_scale_factor_temporal


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Time the official diffusers/PEFT CogVideoX LoRA training step on one GPU "
        "(the official-stack half of the GPU step benchmark; cvx: bench/gpu_step.cpp).",
    )
    p.add_argument("--model", choices=sorted(CONFIGS), default="5b", help="released T2V config (default 5b)")
    p.add_argument("--frames", type=int, default=None, help="pixel frames (default 49 for 5b, 81 for 1.5-5b)")
    p.add_argument("--height", type=int, default=None, help="pixel height (default 480 / 768)")
    p.add_argument("--width", type=int, default=None, help="pixel width (default 720 / 1360)")
    p.add_argument(
        "--diffusers",
        default=None,
        metavar="PATH",
        help="folder holding the `diffusers` package (diffusers v0.32.2 src/); prepended to sys.path",
    )
    p.add_argument("--steps", type=int, default=6, help="timed steps (default 6)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--lora_rank", type=int, default=128)
    p.add_argument("--lora_alpha", type=float, default=64)
    p.add_argument("--no_checkpointing", action="store_true", help="disable gradient checkpointing")
    p.add_argument(
        "--no_autocast",
        action="store_true",
        help="run the bf16 model without accelerate's bf16 autocast around the forward",
    )
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (example default 1e-4)")
    p.add_argument("--max_grad_norm", type=float, default=1.0, help="clip threshold; 0 disables clipping")
    p.add_argument("--peak_tflops", type=float, default=989.0, help="dense bf16 peak for MFU (H100/H200: 989)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="OUT", help="also write the result object to this file")
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must not be negative")
    return args


def geometry(args):
    """Latent geometry as the transformer sees it, from the pixel sizes."""
    cfg = CONFIGS[args.model]
    frames, height, width = DEFAULT_GEOMETRY[args.model]
    frames = args.frames if args.frames is not None else frames
    height = args.height if args.height is not None else height
    width = args.width if args.width is not None else width
    p = cfg["patch_size"]
    pt = cfg["patch_size_t"]
    if frames < 1 or (frames - 1) % VAE_TEMPORAL != 0:
        raise ValueError(f"frames {frames} must be 4k+1")
    if height % (VAE_SPATIAL * p) or width % (VAE_SPATIAL * p):
        raise ValueError(f"height {height} and width {width} must be multiples of {VAE_SPATIAL * p}")
    latent_frames = (frames - 1) // VAE_TEMPORAL + 1
    padded = 0
    if pt is not None and latent_frames % pt:
        # The official 1.5 trainer prepends copies of the first latent frame to make the latent
        # frame count a multiple of patch_size_t (21 -> 22); the padded frame is computed like
        # any other, so only the shape matters here.
        padded = pt - latent_frames % pt
    return {
        "frames": frames,
        "height": height,
        "width": width,
        "latent_frames": latent_frames + padded,
        "latent_frames_padded": padded,
        "latent_height": height // VAE_SPATIAL,
        "latent_width": width // VAE_SPATIAL,
    }


def video_tokens(cfg, geo):
    pt = cfg["patch_size_t"] or 1
    p = cfg["patch_size"]
    return (geo["latent_frames"] // pt) * (geo["latent_height"] // p) * (geo["latent_width"] // p)


def forward_flops(cfg, geo):
    """Forward FLOPs of one sample, counted as cvx counts them (src/train/step_flops.cpp).

    2 FLOPs per multiply-add; matmuls and attention only. Per block, with s = n video + l text
    tokens, D = heads * head_dim, FF inner 4D, E = time_embed_dim:
        q, k, v, out projections   4 * 2 s D^2
        QK^T and PV                2 * 2 s^2 D
        FF (proj in, proj out)     2 * 2 s D (4D)
        norm1/norm2 AdaLN linears  2 * 2 E (6D)
    plus patch_embed.proj (2 n Cin pt p p D), text_proj (2 l 4096 D), proj_out (2 n D Cout pt p p)
    and norm_out.linear (2 E 2D). LoRA adapters, norms, activations and RoPE are not counted.
    """
    n = float(video_tokens(cfg, geo))
    l = float(cfg["max_text_seq_length"])
    s = n + l
    d = float(cfg["num_attention_heads"] * cfg["attention_head_dim"])
    ff = 4.0 * d
    e = float(cfg["time_embed_dim"])
    pt = float(cfg["patch_size_t"] or 1)
    patch = float(cfg["patch_size"] ** 2) * pt
    block = 4 * 2 * s * d * d + 2 * 2 * s * s * d + 2 * 2 * s * d * ff + 2 * 2 * e * 6 * d
    total = cfg["num_layers"] * block
    total += 2 * n * cfg["in_channels"] * patch * d
    total += 2 * l * cfg["text_embed_dim"] * d
    total += 2 * n * d * cfg["out_channels"] * patch
    total += 2 * e * 2 * d
    return total


def attention_flops(cfg, geo):
    """The attention part of forward_flops (QK^T and PV, all blocks)."""
    s = float(video_tokens(cfg, geo)) + float(cfg["max_text_seq_length"])
    d = float(cfg["num_attention_heads"] * cfg["attention_head_dim"])
    return cfg["num_layers"] * 2 * 2 * s * s * d


def step_flops(cfg, geo, checkpointing):
    """Executed FLOPs of one LoRA step, as cvx's training_step_flops(full_finetune=false):
    forward x (1 + 1 recompute if checkpointing) + backward, where the backward of the frozen
    weight matmuls computes input gradients only (x1) and attention's backward is x2."""
    forward = forward_flops(cfg, geo)
    attention = attention_flops(cfg, geo)
    return forward * (2.0 if checkpointing else 1.0) + (forward - attention) + 2.0 * attention


def resize_crop_region_for_grid(src, tgt_width, tgt_height):
    """The crop region of a (h, w) patch grid inside the model's base grid, as diffusers'
    CogVideoX pipeline computes it for 1.0 models (Python round = round-half-to-even)."""
    h, w = src
    if h / w > tgt_height / tgt_width:
        rh = tgt_height
        rw = int(round(tgt_height / h * w))
    else:
        rw = tgt_width
        rh = int(round(tgt_width / w * h))
    top = int(round((tgt_height - rh) / 2.0))
    left = int(round((tgt_width - rw) / 2.0))
    return (top, left), (top + rh, left + rw)


def rotary_tables(get_3d_rotary_pos_embed, cfg, geo, device):
    """(cos, sin) [n, head_dim] float32, as pipeline_cogvideox.py v0.32.2
    _prepare_rotary_positional_embeddings builds them for this resolution."""
    p = cfg["patch_size"]
    pt = cfg["patch_size_t"]
    grid_h = geo["latent_height"] // p
    grid_w = geo["latent_width"] // p
    base_h = cfg["sample_height"] // p
    base_w = cfg["sample_width"] // p
    if pt is None:
        # CogVideoX 1.0: linspace grid over the crop of the base (30 x 45) grid.
        crops = resize_crop_region_for_grid((grid_h, grid_w), base_w, base_h)
        return get_3d_rotary_pos_embed(
            embed_dim=cfg["attention_head_dim"],
            crops_coords=crops,
            grid_size=(grid_h, grid_w),
            temporal_size=geo["latent_frames"],
            device=device,
        )
    # CogVideoX 1.5: integer positions sliced from a (150 x 150) table; temporal size in patch
    # frames. max() only guards resolutions above 2400 px (the pipeline would fail there); the
    # sliced values do not depend on it (the official CogVideo trainer passes the grid itself).
    return get_3d_rotary_pos_embed(
        embed_dim=cfg["attention_head_dim"],
        crops_coords=None,
        grid_size=(grid_h, grid_w),
        temporal_size=(geo["latent_frames"] + pt - 1) // pt,
        grid_type="slice",
        max_size=(max(base_h, grid_h), max(base_w, grid_w)),
        device=device,
    )


def import_diffusers(path):
    if path:
        path = os.path.abspath(path)
        if not os.path.isfile(os.path.join(path, "diffusers", "__init__.py")):
            alt = os.path.join(path, "src")
            if os.path.isfile(os.path.join(alt, "diffusers", "__init__.py")):
                path = alt
            else:
                raise FileNotFoundError(f"no diffusers/__init__.py under {path}")
        sys.path.insert(0, path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded; keep hub code from trying
    import diffusers
    from diffusers import CogVideoXTransformer3DModel
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    return diffusers, CogVideoXTransformer3DModel, get_3d_rotary_pos_embed


def gib(nbytes):
    return nbytes / float(1 << 30)


def run(args, cfg, geo, result):
    stage = "import"
    result["stage"] = stage
    import torch

    result["torch"] = torch.__version__
    if not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available")
    device = torch.device(args.device)
    if device.type != "cuda":
        raise ValueError(f"--device {args.device}: a CUDA device is needed")
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.set_device(device)
    result["gpu"] = torch.cuda.get_device_name(device)
    try:  # the example's --allow_tf32; bf16 matmuls do not use it
        torch.backends.cuda.matmul.allow_tf32 = True
    except Exception:  # newer torch may prefer the fp32_precision API; not essential
        pass

    diffusers, Transformer, get_3d_rotary_pos_embed = import_diffusers(args.diffusers)
    result["diffusers"] = getattr(diffusers, "__version__", "unknown")
    import peft
    from peft import LoraConfig

    result["peft"] = getattr(peft, "__version__", "unknown")

    torch.manual_seed(args.seed)
    dtype = torch.bfloat16

    # ---- model: built on the GPU in bf16 (no 20 GB fp32 copy on the host) ----
    result["stage"] = "build"
    previous_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            transformer = Transformer(**cfg)
    finally:
        torch.set_default_dtype(previous_dtype)
    # As the example: frozen base, moved to the device in weight_dtype (bf16), checkpointing
    # enabled, then the adapter added.
    transformer.requires_grad_(False)
    transformer.to(device, dtype=dtype)
    checkpointing = not args.no_checkpointing
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    lora_config = LoraConfig(
        r=args.lora_rank,
        lora_alpha=args.lora_alpha,
        init_lora_weights=True,
        target_modules=["to_k", "to_q", "to_v", "to_out.0"],
    )
    transformer.add_adapter(lora_config)
    # The example casts the LoRA parameters to fp32 (cast_training_params) only under fp16 mixed
    # precision; with bf16 they keep the dtype PEFT gives them (that of the base layer: bf16).
    trainable = [p for p in transformer.parameters() if p.requires_grad]
    if not trainable:
        raise RuntimeError("no trainable parameters after add_adapter")
    result["lora_params"] = int(sum(p.numel() for p in trainable))
    result["lora_dtype"] = str(trainable[0].dtype).replace("torch.", "")
    result["base_params"] = int(sum(p.numel() for p in transformer.parameters() if not p.requires_grad))
    transformer.train()

    # AdamW with the example's defaults (lr 1e-4, betas (0.9, 0.95), weight decay 1e-4, eps 1e-8),
    # which are also the official CogVideo recipe's (its lr is 2e-5; the lr does not change the cost).
    # The example's own default optimizer name is "adam" (torch.optim.Adam with the same
    # arguments); the official recipe and cvx use AdamW, and the two cost the same.
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, betas=(0.9, 0.95), weight_decay=1e-4, eps=1e-8)

    # ---- inputs: batch 1, random ----
    result["stage"] = "inputs"
    f, h, w = geo["latent_frames"], geo["latent_height"], geo["latent_width"]
    latents = torch.randn(1, f, cfg["in_channels"], h, w, device=device, dtype=dtype)  # x_t, [B, F, C, H, W]
    prompt_embeds = torch.randn(1, cfg["max_text_seq_length"], cfg["text_embed_dim"], device=device, dtype=dtype)
    target = torch.randn(1, f, cfg["out_channels"], h, w, device=device, dtype=torch.float32)
    timesteps = torch.randint(0, 1000, (1,), device=device, dtype=torch.int64)
    expected_tokens = video_tokens(cfg, geo)
    cos, sin = rotary_tables(get_3d_rotary_pos_embed, cfg, geo, device)
    if cos.shape[0] != expected_tokens:
        raise RuntimeError(f"rotary table has {cos.shape[0]} rows, expected {expected_tokens} video tokens")
    del cos, sin

    autocast = not args.no_autocast

    def forward():
        # As the example, the RoPE tables are built on the device in every step (a few small
        # kernels). The example's noise sampling and scheduler.add_noise are left out: element-wise
        # work on the 1 x F x 16 x h x w latent, negligible next to the transformer.
        rope = rotary_tables(get_3d_rotary_pos_embed, cfg, geo, device)
        # accelerate (mixed_precision="bf16") wraps the prepared model's forward in
        # torch.autocast(bf16) and converts its outputs to fp32.
        context = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with context:
            out = transformer(
                hidden_states=latents,
                encoder_hidden_states=prompt_embeds,
                timestep=timesteps,
                ofs=None,
                image_rotary_emb=rope,
                return_dict=False,
            )[0]
        return out.float() if autocast else out

    def train_step():
        pred = forward()
        # The example's loss (x0 = get_velocity(v, x_t, t), weights 1/(1 - alpha_bar)) is
        # algebraically the plain v-MSE; the element-wise cost is the same.
        loss = torch.mean((pred.float() - target.float()) ** 2)
        loss.backward()
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    # ---- timed loop ----
    result["stage"] = "step"
    times = []
    losses = []
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        loss = train_step()
        torch.cuda.synchronize(device)
        t1 = time.perf_counter()
        losses.append(float(loss))
        kind = "warmup" if i < args.warmup else "timed"
        print(f"[official] step {i + 1}/{args.warmup + args.steps} ({kind}): {t1 - t0:.3f} s, loss {losses[-1]:.4f}",
              file=sys.stderr, flush=True)
        if i >= args.warmup:
            times.append(t1 - t0)

    median = statistics.median(times)
    flops = step_flops(cfg, geo, checkpointing)
    tflops = flops / median / 1e12
    result.pop("stage", None)
    result.update(
        {
            "checkpointing": checkpointing,
            "step_seconds_median": median,
            "step_seconds_all": times,
            "flops_per_step": flops,
            "tflops_executed": tflops,
            "mfu": tflops / args.peak_tflops if args.peak_tflops > 0 else None,
            "peak_tflops": args.peak_tflops,
            "peak_allocated_gib": gib(torch.cuda.max_memory_allocated(device)),
            "peak_reserved_gib": gib(torch.cuda.max_memory_reserved(device)),
            "loss_last": losses[-1],
            "loss_finite": all(math.isfinite(x) for x in losses),
        }
    )
    return result


def emit(result, json_path):
    line = json.dumps(result)
    print("RESULT " + line, flush=True)
    if json_path:
        try:
            d = os.path.dirname(os.path.abspath(json_path))
            os.makedirs(d, exist_ok=True)
            with open(json_path, "w", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError as exc:
            print(f"[official] could not write {json_path}: {exc}", file=sys.stderr)


def main(argv=None):
    args = parse_args(argv)
    cfg = CONFIGS[args.model]
    result = {"stack": "official", "model": args.model, "lora_rank": args.lora_rank,
              "lora_alpha": args.lora_alpha, "checkpointing": not args.no_checkpointing,
              "autocast": not args.no_autocast, "warmup": args.warmup, "steps": args.steps}
    try:
        geo = geometry(args)
        result.update(
            {
                "frames": geo["frames"],
                "height": geo["height"],
                "width": geo["width"],
                "latent_frames": geo["latent_frames"],
                "latent_height": geo["latent_height"],
                "latent_width": geo["latent_width"],
                "tokens": video_tokens(cfg, geo),
                "text_tokens": cfg["max_text_seq_length"],
            }
        )
        result = run(args, cfg, geo, result)
    except Exception as exc:  # noqa: BLE001 - report anything (OOM included) and let the caller go on
        traceback.print_exc(file=sys.stderr)
        message = f"{type(exc).__name__}: {exc}"
        if len(message) > 2000:
            message = message[:2000] + " ..."
        result["error"] = message
        if "out of memory" in message.lower() or type(exc).__name__ == "OutOfMemoryError":
            result["oom"] = True
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
