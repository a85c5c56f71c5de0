"""Print the numbers docs/equivalence.md quotes, measured with tests/test_equivalence.py's helpers.

    OMP_NUM_THREADS=1 python tests/data/measure_equivalence.py
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]
import test_equivalence as eq  # noqa: E402
from guided_diffusion import load_model  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        for name in eq.CHAINS:
            case = eq.load_case(name)
            out, op = eq.run_chain(mp, name)
            line = f"{name}: float32 output vs official {eq.rel(out, case['output']):.2e}"
            if "output_float64" in case:
                out64, _ = eq.run_chain(mp, name, torch.float64)
                line += (f", vs official float64 {eq.rel(out, case['output_float64']):.2e}, ours float32 vs ours "
                         f"float64 {eq.rel(out, out64):.2e}, float64 vs official float64 "
                         f"{eq.rel(out64, case['output_float64']):.2e} (official float32 vs float64 "
                         f"{eq.rel(case['output'], case['output_float64']):.2e})")
            if "f_final" in case:
                line += (f", f {op.f.item():.7f} vs {case['f_final'].item():.7f} "
                         f"({eq.rel(op.f.detach(), case['f_final']):.1e}), M {eq.rel(op.M.detach(), case['M_final']):.1e}")
            print(line, flush=True)
        for name in eq.DIFFPIR + ("dpps_sr4",):
            case = eq.load_case(name)
            sampler = eq.build_sampler(**case["sampler"])
            x = eq.with_tape(mp, eq.our_draws(name, step=-1), lambda g: sampler.initial_state(
                case["x_init"].shape, eq.operator(case), case["y"], case["sigma"], g, torch.device("cpu"), torch.float32))
            print(f"{name}: start vs official x_init {eq.rel(x, case['x_init']):.2e}")
    case = eq.load_case("diffpir_sr4")
    ac = eq.build_sampler(**case["sampler"]).train_alphas_cumprod[999].item()
    z = eq.our_draws("diffpir_sr4", step=-1)[0].double()
    opencv = (case["x_init_float64"] - math.sqrt(1 - ac) * z) / math.sqrt(ac)
    print(f"bicubic_upsample vs OpenCV (recovered): {eq.rel(eq.bicubic_upsample(case['y'].double(), 4), opencv):.2e}")
    name = "dps_inpaint_random"
    case = eq.load_case(name)
    op, sampler, model = eq.operator(case), eq.build_sampler(**case["sampler"]), eq.golden_unet(torch.float32)
    n = len(case["timesteps"])
    worst = []
    for k in range(n):
        i = n - 1 - k
        x = case["x_init"] if k == 0 else case["x_t"][k - 1]
        t = torch.full((1,), i, dtype=torch.long)
        with pytest.MonkeyPatch.context() as mp:
            x_next, x0_hat = eq.with_tape(mp, eq.our_draws(name, step=k),
                                          lambda g: sampler.step(model, x, t, op, case["y"], case["sigma"], g))
        worst.append((eq.rel(x_next, case["x_t"][k]), eq.rel(x0_hat, case["x0_hat"][k]), k))
    print(f"{name} teacher forcing: worst x_t {max(worst)[0]:.2e} (step {max(worst)[2]}), worst x0_hat "
          f"{max(w[1] for w in worst):.2e}, last 25 steps x_t <= {max(w[0] for w in worst[25:]):.2e}")
    for name in eq.ZOO_CASES:  # the zoo checker's replay: the first tape the sampler consumes exactly
        case = eq.load_case(name)
        for kind, tape in eq.zoo_tapes(name).items():
            try:
                out = eq.run_zoo_case(name, tape)
            except AssertionError:
                continue
            line = f"{name}: zoo replay ({kind} tape) output vs official {eq.rel(out, case['output']):.2e}"
            if case["method"] == "dpir":  # network and data step in float64 against the official float64 run
                model = load_model(eq.checkpoint_file("golden_drunet_small.pt"), dtype=torch.float64)
                out64 = eq.build_sampler(**case["sampler"]).sample(
                    model, eq.operator(case), 2 * case["y_official"].double() - 1, sigma=case["sigma"],
                    shape=case["image"].shape)
                line += f", float64 vs official float64 {eq.rel((out64 + 1) / 2, case['output_float64']):.2e}"
            print(line, flush=True)
            break


if __name__ == "__main__":
    main()
