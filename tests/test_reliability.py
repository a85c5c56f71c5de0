"""A long run survives bad input and a kill: fuzzed configs and files, kill-and-resume."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from guided_diffusion.files import is_temporary
from scripts.sample import main as sample_main

REPO = Path(__file__).resolve().parents[1]


def _random_file(folder: Path, k: int, rng: random.Random) -> None:
    """One image file of a random kind, some of them broken."""
    kind = rng.choice(["rgb", "gray", "rgba", "16bit", "palette", "wide", "tiny", "corrupt", "empty", "text"])
    arr = np.random.default_rng(k).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    path = folder / f"f{k}.png"
    if kind == "rgb":
        Image.fromarray(arr).save(path)
    elif kind == "gray":
        Image.fromarray(arr[..., 0]).save(path)
    elif kind == "rgba":
        Image.fromarray(np.dstack([arr, arr[..., :1]]), "RGBA").save(path)
    elif kind == "16bit":
        Image.fromarray(arr[..., 0].astype(np.uint16) * 257).save(path)
    elif kind == "palette":
        Image.fromarray(arr).convert("P").save(path)
    elif kind == "wide":
        Image.fromarray(np.zeros((20, 90, 3), dtype=np.uint8)).save(path)
    elif kind == "tiny":
        Image.fromarray(np.zeros((3, 5, 3), dtype=np.uint8)).save(path)
    elif kind == "corrupt":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(40)))
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.write_text("not an image")


MUTATIONS = [  # (dotted key, bad value): each one must be refused before any work
    ("sampler.name", "dsp"), ("sampler.steps", 0), ("sampler.steps", 5000), ("sampler.steps", "two"),
    ("sampler.scale", "big"), ("task.operator.scale_factor", 0), ("task.operator.name", "unknown_op"),
    ("task.noise", {"name": "gaussian", "sigma": -1.0}), ("task.noise", {"name": "gausian"}),
    ("data.resize", "stretch"), ("batch_size", 0), ("seed", "x"), ("unknwon_key", 1), ("progress_every", -2),
    ("model.precision", "fp8"), ("model.checkpoint", "nowhere/ffhq_10m.pt"), ("data.input", "no/such/folder"),
]


def _random_config(tmp: Path, tiny_checkpoint: Path, rng: random.Random) -> dict:
    """A valid config of a random sampler and operator, with 0, 1 or 2 random bad values."""
    name = rng.choice(["dps", "dpps", "ddim", "diffpir", "gdp"])
    cfg = {"model": {"checkpoint": str(tiny_checkpoint)},
           "sampler": {"name": name, "steps": rng.choice([1, 2, 3]), **({"scale": 0.5} if name in ("dps", "dpps") else {})},
           "task": {"operator": rng.choice([
               {"name": "super_resolution", "scale_factor": 2},
               {"name": "inpainting", "mask_type": rng.choice(["box", "random"]), "image_size": 32, "box_size": 8},
               {"name": "gaussian_blur", "kernel_size": 5, "intensity": 1.0, "boundary": "circular"},
               {"name": "colorization"}]),
               "noise": rng.choice([None, {"name": "gaussian", "sigma": 0.05}, {"name": "poisson", "rate": 1.0}])},
           "data": {"input": str(tmp / "images"), "resize": rng.choice(["center_crop", "resize", "error"])},
           "batch_size": rng.choice([1, 2]), "seed": rng.choice([0, 7]), "output": str(tmp / "out")}
    if name == "diffpir":  # its steps count visited timesteps, at least 2
        cfg["sampler"]["steps"] = 2
    for key, value in rng.sample(MUTATIONS, rng.choice([0, 0, 1, 2])):
        *parents, last = key.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        node[last] = value
    return cfg


def test_fuzzed_configs_and_files_end_in_success_or_one_line_errors(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    """Every outcome is exit 0 (all done), 1 (run finished, some images failed: a summary), or 2
    (refused before any work: one line). Never a traceback."""
    rng = random.Random(0)
    outcomes = {0: 0, 1: 0, 2: 0}

    for case in range(40):
        tmp = tmp_path / f"case{case}"
        (tmp / "images").mkdir(parents=True)
        Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp / "images" / "good.png")
        for k in range(2):
            _random_file(tmp / "images", k, rng)
        cfg_path = tmp / "cfg.yaml"
        cfg_path.write_text(yaml.safe_dump(_random_config(tmp, tiny_checkpoint, rng)))
        code = sample_main(["--config", str(cfg_path)])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if not line.startswith(("images", "dps", "dpps", "ddim", "diffpir", "gdp", "\r"))
                  and "it/s" not in line and "s/it" not in line and "batch/s" not in line]
        assert code in (0, 1, 2), (case, code)
        assert "Traceback" not in err, (case, err)
        if code == 2:
            assert len(errors) == 1 and errors[0].startswith("error: "), (case, errors)
        if code == 1:
            assert "image(s) failed" in err
        outcomes[code] += 1
    # The fuzzer reaches every end: refused configs, runs with failed images, clean runs.
    assert min(outcomes.values()) > 0, outcomes


def test_killed_run_resumes_with_the_uninterrupted_outputs(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """SIGKILL a run of several batches in the middle of a batch's trajectory, start it again: the
    finished images are kept, the stopped batch continues from its saved state, and every PNG is
    byte-identical to an uninterrupted run's; no temporary file is left."""
    images = tmp_path / "images"
    images.mkdir()
    for k in range(6):
        Image.fromarray(np.random.default_rng(k).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"i{k}.png")
    cfg = {"model": {"checkpoint": str(tiny_checkpoint)}, "sampler": {"name": "dps", "scale": 0.3, "steps": 25},
           "task": {"operator": {"name": "super_resolution", "scale_factor": 2},
                    "noise": {"name": "gaussian", "sigma": 0.05}},
           "data": {"input": str(images)}, "batch_size": 2, "state_every_steps": 1, "output": str(tmp_path / "out")}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, str(REPO / "scripts" / "sample.py"), "--config", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, env=env)
    out = tmp_path / "out"
    # Kill at a random step of the second batch (images i2, i3), the first one written.
    step = random.Random(3).randrange(1, 20)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            with open(out / ".dfrestore" / "state" / "images-2-3.pt", "rb") as f:
                if torch.load(f, weights_only=True)["next_index"] <= 24 - step:
                    break
        except (OSError, RuntimeError):
            pass
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert sorted(p.name for p in (out / "recon").glob("*.png")) == ["i0.png", "i1.png"]
    reached = torch.load(out / ".dfrestore" / "state" / "images-2-3.pt", weights_only=True)["next_index"]
    assert 0 <= reached <= 24 - step
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"wrote 4 image(s) to {out} (2 already done)" in again.stdout  # finished images are not redone
    whole = subprocess.run([*cmd, "--set", f"output={tmp_path / 'whole'}"], capture_output=True, text=True,
                           cwd=REPO, env=env, timeout=300)
    assert whole.returncode == 0, whole.stderr
    for sub in ("input", "label", "recon", "baseline"):
        files = sorted((out / sub).iterdir())
        assert [f.name for f in files] == [f"i{k}.png" for k in range(6)]
        assert [f.read_bytes() for f in files] == [(tmp_path / "whole" / sub / f.name).read_bytes() for f in files]
    assert [p for p in out.rglob("*") if is_temporary(p)] == []
    assert list((out / ".dfrestore" / "state").iterdir()) == []
