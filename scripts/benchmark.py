"""Speed and memory of the UNet: `python scripts/benchmark.py [--device cpu|cuda] [--batch 1 8]`.

Prints one Markdown table measured in this run: the ffhq_10m architecture (random weights, same
shapes and arithmetic as the checkpoint) at 256x256, forward alone and forward plus the gradient
w.r.t. the input (what DPS needs each step), and each sampler's time per step on SR x4 with its
overhead over the model call it needs (forward for DDPM/DDIM, forward + grad for DPS/DPPS; DPPS's
candidates are in its overhead; a 4-step run, so DPPS's n_t is 2..50 rather than its 1000-step
mix); median wall time over `--repeats` runs after a warm-up. Peak memory on CUDA is the allocator's peak above the resident model; on the CPU each
case runs in a fresh process and reports the growth of its peak RSS after the model is built.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from guided_diffusion import PUBLIC_CHECKPOINTS, create_model  # noqa: E402

PASSES = ("forward", "forward + grad wrt input")
# Samplers timed on SR x4 (bicubic); each runs SAMPLER_STEPS steps of its respaced grid.
SAMPLERS = {"ddim": {}, "ddpm": {}, "dps": {"scale": 0.3}, "dpps": {"scale": 1.0}}
SAMPLER_STEPS = 4


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(arch: str, pass_name: str, batch: int, device: torch.device, repeats: int) -> Dict[str, float]:
    """Median seconds of one pass over `repeats` runs after a warm-up, and peak memory in MiB."""
    torch.manual_seed(0)
    model = create_model(**PUBLIC_CHECKPOINTS[arch].flags).to(device).eval().requires_grad_(False)
    x = torch.randn(batch, 3, model.image_size, model.image_size, device=device)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)

    if pass_name in SAMPLERS:
        from operators import build_operator
        from samplers import build_sampler
        op = build_operator("super_resolution", scale_factor=4).to(device)
        y = op.forward(x)
        sampler = build_sampler(pass_name, steps=SAMPLER_STEPS, **SAMPLERS[pass_name])
        gen = torch.Generator(device)

    def run() -> None:
        if pass_name in SAMPLERS:
            with torch.no_grad():
                sampler.sample(model, op, y, sigma=0.05, shape=tuple(x.shape), generator=gen.manual_seed(0))
        elif pass_name == PASSES[0]:
            with torch.no_grad():
                model(x, t)
        else:
            xi = x.clone().requires_grad_(True)
            torch.autograd.grad(model(xi, t)[:, :3].square().sum(), xi)

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
    return {"seconds": statistics.median(times), "peak_mib": peak}


def measure_isolated(arch: str, pass_name: str, batch: int, repeats: int) -> Dict[str, float]:
    """CPU: run `measure` in a fresh process, since a process's peak RSS cannot be reset."""
    cmd = [sys.executable, __file__, "--child", json.dumps([arch, pass_name, batch, repeats])]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arch", default="ffhq_10m", choices=sorted(PUBLIC_CHECKPOINTS))
    parser.add_argument("--samplers", nargs="*", default=sorted(SAMPLERS), choices=sorted(SAMPLERS),
                        help=f"samplers to time ({SAMPLER_STEPS} steps each, SR x4); none to skip")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        arch, pass_name, batch, repeats = json.loads(args.child)
        print(json.dumps(measure(arch, pass_name, batch, torch.device("cpu"), repeats)))
        return
    device = torch.device(args.device)
    rows = []
    for batch in args.batch:
        for pass_name in (*PASSES, *args.samplers):
            r = (measure(args.arch, pass_name, batch, device, args.repeats) if device.type == "cuda"
                 else measure_isolated(args.arch, pass_name, batch, args.repeats))
            steps = SAMPLER_STEPS if pass_name in SAMPLERS else 1
            rows.append((pass_name, batch, r["seconds"] / steps, r["peak_mib"]))
    flags = PUBLIC_CHECKPOINTS[args.arch].flags
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{platform.machine()}, {torch.get_num_threads()} threads")
    print(f"UNet {args.arch} architecture, {flags['image_size']}x{flags['image_size']}, float32 eager, "
          f"device {device} ({where}), torch {torch.__version__}, median of {args.repeats} after a warm-up\n")
    mem = "peak allocated MiB (above model)" if device.type == "cuda" else "peak RSS growth MiB (above model)"
    model_time = {(name, batch): sec for name, batch, sec, _ in rows if name in PASSES}
    print(f"| pass | batch | seconds per call or step | overhead vs model call | {mem} |\n|---|---:|---:|---:|---:|")
    for name, batch, sec, peak in rows:
        # DPS-style steps need forward + backward; DDPM/DDIM a forward only.
        base = model_time[(PASSES[1] if name in ("dps", "dpps") else PASSES[0], batch)]
        overhead = f"{sec / base - 1:+.1%}" if name in SAMPLERS else ""
        label = f"sampler {name} (SR x4)" if name in SAMPLERS else name
        print(f"| {label} | {batch} | {sec:.3f} | {overhead} | {peak:.0f} |")


if __name__ == "__main__":
    main()
