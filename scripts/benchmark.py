"""Speed and memory of the UNet and the samplers: `python scripts/benchmark.py [--device cpu|cuda]`.

Prints Markdown tables measured in this run, for the ffhq_10m architecture (random weights: the
same shapes and arithmetic as the checkpoint) at 256x256 (`--image-size` for another size):
1. the model call under each run-time option (guided_diffusion/runtime.py) against fp32 eager:
   forward alone and forward + gradient w.r.t. the input (what DPS/DPPS need every step);
2. every sampler's time per step on SR x4 and its overhead beyond the model call it needs
   (forward for DDPM/DDIM/DDNM/DDRM, forward + grad for DPS/DPPS/MCG/PiGDM (its VJP); DPPS's candidates count as overhead;
   DPIR's step is one HQS iteration with the diffusion UNet as denoiser: one forward, and its float64
   data step as overhead);
   a 4-step run, so DPPS's n_t spans 2..50 rather than its 1000-step mix (16.3 on average);
   DAPS's step is one annealing step (5 network calls and 100 Langevin steps, the DAPS-1K step),
   also reported per image at the default 200 annealing steps;
3. the fixed precision case: PSNR of a DPS restoration in fp16/bf16 against fp32 (`precision_psnr`).
Times are medians over `--repeats` runs after a warm-up. Memory: on CUDA the allocator's peak above
the resident model; on the CPU each case runs in a fresh process and reports the growth of its
peak RSS after the model is built (a process's peak cannot be reset).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runs.interrupt import quiet_start  # noqa: E402

if __name__ == "__main__":
    quiet_start()  # Ctrl-C during the imports below: one line, not a traceback

import torch  # noqa: E402

from guided_diffusion import PUBLIC_CHECKPOINTS, create_model, load_model  # noqa: E402
from guided_diffusion.runtime import ModelRunner  # noqa: E402
from runs.cli import exit_status  # noqa: E402

FORWARD, GRAD = "forward", "forward + grad wrt input"
OPTIONS: Dict[str, Dict[str, Any]] = {
    "fp32 eager": {}, "bf16 autocast": {"precision": "bf16"}, "fp16 autocast": {"precision": "fp16"},
    "channels_last": {"channels_last": True}, "sdpa math": {"sdpa": "math"},
    "checkpointing": {"checkpointing": True}, "torch.compile": {"compile": True},
}
SAMPLERS = {"ddim": {}, "ddpm": {}, "dps": {"scale": 0.3}, "dpps": {"scale": 1.0}, "reddiff": {"lr": 0.1},
            "daps": {"lr": 1e-4}, "mcg": {"scale": 1.0}, "dpir": {"denoiser": "diffusion"}, "ddnm": {}, "pgdm": {},
            "ddrm": {}}
# Network calls per step where not one: DAPS's step is one annealing step (5 ODE calls, 100 Langevin steps).
CALLS_PER_STEP = {"daps": 5}
DAPS_1K_STEPS = 200  # annealing steps of the default budget (DAPS-1K)
SAMPLER_STEPS = 4


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(case: Dict[str, Any], device: torch.device, repeats: int) -> Dict[str, float]:
    """Median seconds per call (or per sampler step) and peak memory in MiB of one case."""
    torch.manual_seed(0)
    model = create_model(**PUBLIC_CHECKPOINTS[case["arch"]].flags).to(device).eval().requires_grad_(False)
    runner = ModelRunner(model, **case.get("options", {}))
    batch, size = case["batch"], case.get("size") or model.image_size
    x = torch.randn(batch, 3, size, size, device=device)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    if "sampler" in case:
        from operators import build_operator
        from samplers import build_sampler
        op = build_operator("super_resolution", scale_factor=4).to(device)
        y, sampler = op(x), build_sampler(case["sampler"], steps=SAMPLER_STEPS, **SAMPLERS[case["sampler"]])

        def run() -> None:
            with torch.no_grad():
                sampler.sample(runner, op, y, sigma=0.05, shape=tuple(x.shape), generator=torch.Generator(device).manual_seed(0))
    elif case["pass"] == FORWARD:
        def run() -> None:
            with torch.no_grad():
                runner(x, t)
    else:
        def run() -> None:
            xi = x.clone().requires_grad_(True)
            torch.autograd.grad(runner(xi, t)[:, :3].square().sum(), xi)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss_base = _peak_rss_mib()
    run()
    times: List[float] = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20 if device.type == "cuda" else _peak_rss_mib() - rss_base
    per = SAMPLER_STEPS if "sampler" in case else 1
    return {"seconds": statistics.median(times) / per, "peak_mib": peak}


def measure_case(case: Dict[str, Any], device: torch.device, repeats: int) -> Dict[str, float]:
    """On the CPU run `measure` in a fresh process, so each case's peak RSS is its own."""
    if device.type == "cuda":
        return measure(case, device, repeats)
    cmd = [sys.executable, __file__, "--child", json.dumps({**case, "repeats": repeats})]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def precision_psnr(device: torch.device) -> Dict[str, Dict[str, float]]:
    """The fixed precision case: DPS (20 steps, scale 0.5) restoring SR x2 of the 32x32 astronaut
    with the golden model, in fp32, fp16 and bf16. Returns per precision the PSNR (dB, [0, 1]
    scale) against the ground truth and against the fp32 restoration."""
    from guided_diffusion.image_io import load_image
    from operators import build_operator
    from samplers import build_sampler
    model = load_model(REPO / "model_zoo" / "golden_unet_small.pt", device=device)
    label = load_image(REPO / "data" / "samples" / "astronaut_256.png", size=32)[None].to(device)
    op = build_operator("super_resolution", scale_factor=2).to(device)
    sampler = build_sampler("dps", scale=0.5, steps=20)

    def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
        mse = ((((a + 1) / 2).clamp(0, 1) - ((b + 1) / 2).clamp(0, 1)) ** 2).mean().item()
        return -10 * math.log10(max(mse, 1e-20))

    outs = {name: sampler.sample(ModelRunner(model, precision=name), op, op(label), sigma=0.0, shape=tuple(label.shape),
                                 generator=torch.Generator(device).manual_seed(0))
            for name in ("fp32", "fp16", "bf16")}
    return {name: {"vs_truth": psnr(x, label), "vs_fp32": psnr(x, outs["fp32"])} for name, x in outs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arch", default="ffhq_10m", choices=sorted(PUBLIC_CHECKPOINTS))
    parser.add_argument("--image-size", type=int, default=None,
                        help="input size (default: the architecture's, 256); the UNet is convolutional, so a "
                             "smaller size runs the same layers on fewer pixels (for slow CPUs)")
    parser.add_argument("--options", nargs="*", default=None, choices=list(OPTIONS),
                        help="run-time options to time; default: all but torch.compile, and on the CPU also "
                             "but fp16 (its CPU kernels are reference code: minutes per call)")
    parser.add_argument("--samplers", nargs="*", default=sorted(SAMPLERS), choices=sorted(SAMPLERS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case = json.loads(args.child)
        print(json.dumps(measure(case, torch.device("cpu"), case.pop("repeats"))))
        return
    device = torch.device(args.device)
    if args.options is None:
        skip = {"torch.compile"} | ({"fp16 autocast"} if device.type == "cpu" else set())
        args.options = [o for o in OPTIONS if o not in skip]
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{platform.machine()}, {torch.get_num_threads()} threads")
    mem = "peak alloc MiB" if device.type == "cuda" else "peak RSS growth MiB"
    size = args.image_size or PUBLIC_CHECKPOINTS[args.arch].flags["image_size"]
    print(f"UNet {args.arch} architecture, {size}x{size}, device {device} ({where}), torch {torch.__version__}, "
          f"median of {args.repeats} after a warm-up\n")
    options = ["fp32 eager", *[o for o in args.options if o != "fp32 eager"]]
    print(f"| option | pass | batch | seconds | vs fp32 eager | {mem} |\n|---|---|---:|---:|---:|---:|")
    base: Dict[tuple, float] = {}
    for batch in args.batch:
        for pass_name in (FORWARD, GRAD):
            for option in options:
                r = measure_case({"arch": args.arch, "batch": batch, "pass": pass_name, "options": OPTIONS[option],
                                  "size": size}, device, args.repeats)
                base.setdefault((pass_name, batch), r["seconds"])
                ratio = r["seconds"] / base[(pass_name, batch)]
                print(f"| {option} | {pass_name} | {batch} | {r['seconds']:.3f} | {ratio:.2f}x | {r['peak_mib']:.0f} |",
                      flush=True)
    if args.samplers:
        print(f"\n| sampler (SR x4, fp32) | batch | seconds per step | overhead beyond model call | {mem} |\n"
              "|---|---:|---:|---:|---:|")
        for batch in args.batch:
            for name in args.samplers:
                r = measure_case({"arch": args.arch, "batch": batch, "sampler": name, "size": size}, device, args.repeats)
                needed = base[(GRAD if name in ("dps", "dpps", "mcg", "pgdm") else FORWARD, batch)] * CALLS_PER_STEP.get(name, 1)
                print(f"| {name} | {batch} | {r['seconds']:.3f} | {r['seconds'] / needed - 1:+.1%} | {r['peak_mib']:.0f} |",
                      flush=True)
                if name == "daps":
                    print(f"| daps per image, DAPS-1K ({DAPS_1K_STEPS} annealing steps) | {batch} | "
                          f"{DAPS_1K_STEPS * r['seconds']:.1f} | | |", flush=True)
    psnr = precision_psnr(device)
    print("\n| precision (DPS 20 steps, SR x2, golden 32x32 model) | PSNR vs truth dB | difference to fp32 dB | PSNR vs fp32 output dB |\n"
          "|---|---:|---:|---:|")
    for name, r in psnr.items():
        vs32 = "" if name == "fp32" else f"{r['vs_fp32']:.1f}"
        print(f"| {name} | {r['vs_truth']:.3f} | {r['vs_truth'] - psnr['fp32']['vs_truth']:+.3f} | {vs32} |")


if __name__ == "__main__":
    sys.exit(exit_status(lambda: main() or 0, resume="it writes nothing; run it again"))
