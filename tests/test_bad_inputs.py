"""Bad configs, checkpoints, images and logs end in one line naming the key or file, never a traceback.

Scripts run in-process through their main(argv): exit 2 for a refused config, 1 for a failed run.
"""
from __future__ import annotations

import inspect
import json
import math
import tracemalloc
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from configs import ConfigError, load_config
from guided_diffusion.image_io import MAX_PIXELS, load_image
from samplers import Sampler, build_sampler, list_samplers
from samplers.base import _REGISTRY
from samplers.params import specs_of
from scripts import evaluate as evaluate_script
from scripts import sample as sample_script
from scripts import train as train_script


def one_line(capsys, code: int, expected_code: int, *names: str) -> str:
    """Assert the exit code and that stderr is one line (no traceback) containing every name."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == expected_code, err
    assert "Traceback" not in err and len(lines) == 1, err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def write_yaml(path: Path, data: Dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def base_cfg(tmp_path: Path, tiny_checkpoint: Path) -> Dict[str, Any]:
    return {"model": {"checkpoint": str(tiny_checkpoint)}, "sampler": {"name": "ddim", "steps": 2},
            "num_samples": 1, "batch_size": 1, "grid": False, "output": str(tmp_path / "out")}


# ---- A. configs: each bad value is refused by sample.py in one line naming its key --------------
BAD_CONFIGS = [
    ("sampler.steps", {"sampler": {"name": "ddim", "steps": 2.7}}, []),         # not run as 2 steps
    ("sampler.steps", {"sampler": {"name": "ddim", "steps": "ten"}}, []),
    ("sampler.steps", {"sampler": {"name": "ddim", "steps": True}}, []),        # a bool is no number
    ("num_samples", {"num_samples": True}, []),
    ("num_samples", {"num_samples": None}, []),
    ("sampler.eta", {"sampler": {"name": "ddim", "eta": 1.5}}, []),
    ("sampler.scale", {"sampler": {"name": "dps", "scale": -0.3}}, []),
    ("sampler.scale", {"sampler": {"name": "dps", "scale": float("nan")}}, []),
    ("sampler.lambda_", {"sampler": {"name": "diffpir", "lambda_": 0.0}}, []),
    ("sampler.zeta", {"sampler": {"name": "diffpir", "zeta": 2.0}}, []),
    ("sampler.scal", {"sampler": {"name": "dps", "scal": 0.3}}, []),             # typo: did you mean
    ("task.noise.sigma", {"task": {"operator": {"name": "inpainting"}, "noise": {"name": "gaussian",
                                                                                  "sigma": float("inf")}},
                          "data": {"input": "x"}}, []),
    ("seed", {"seed": -1}, []),
    ("seed", {"seed": 2 ** 63}, []),
    ("device", {"device": "cuda:x"}, []),
    ("device", {"device": "gpu"}, []),
    ("model.flags.num_chanels", {}, ["model.flags={num_chanels: 64}"]),
    ("model.flags.num_channels", {}, ["model.flags.num_channels='64'"]),
    ("model.flags.dropout", {}, ["model.flags.dropout=true"]),
    ("data.max_pixels", {"data": {"max_pixels": 0}}, []),
    ("--set 'sampler={name: dps, scale: 0.3'", {}, ["sampler={name: dps, scale: 0.3"]),  # bad YAML
    ("model", {"model": 3}, []),
]


@pytest.mark.parametrize("key,update,sets", BAD_CONFIGS, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(BAD_CONFIGS)])
def test_bad_config_is_one_line(capsys, tmp_path: Path, base_cfg: Dict[str, Any], key: str,
                                update: Dict[str, Any], sets: List[str]) -> None:
    cfg = {**base_cfg, **update}
    overrides = [arg for item in sets for arg in ("--set", item)]
    code = sample_script.main(["--config", str(write_yaml(tmp_path / "cfg.yaml", cfg)), *overrides])
    one_line(capsys, code, 2, key)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_config_not_utf8_is_one_line(capsys, tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("output: r\xe9sultats\n".encode("latin-1"))
    line = one_line(capsys, sample_script.main(["--config", str(path)]), 2, str(path), "UTF-8")
    assert "0xe9 at offset 9" in line


def test_empty_block_takes_its_defaults(capsys, tmp_path: Path, base_cfg: Dict[str, Any]) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("model:\n#  checkpoint: model_zoo/demo64.pt\nsampler:\ndata:\n")
    cfg = load_config(str(path))
    assert cfg["model"]["precision"] == "fp32" and cfg["model"]["flags"] == {}
    assert cfg["sampler"] == {"name": "ddpm"} and cfg["data"]["resize"] == "center_crop"
    one_line(capsys, sample_script.main(["--config", str(path)]), 2, "model.checkpoint")


def test_whole_block_set_replaces_and_dotted_set_merges(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "diffpir.yaml", {"sampler": {"name": "diffpir", "lambda_": 7.0, "zeta": 0.3}})
    switched = load_config(str(path), ["sampler={name: dps, scale: 0.3}"])
    assert switched["sampler"] == {"name": "dps", "scale": 0.3}
    merged = load_config(str(path), ["sampler.zeta=1e-1"])   # 1e-1 is a number (YAML 1.2)
    assert merged["sampler"] == {"name": "diffpir", "lambda_": 7.0, "zeta": 0.1}
    # Without the replacement DPS would be handed DiffPIR's lambda_:
    with pytest.raises(ConfigError, match=r"'sampler.lambda_' is not a parameter of 'dps'"):
        load_config(str(path), ["sampler.name=dps"])
    task = write_yaml(tmp_path / "task.yaml", {"data": {"input": "x"}, "task": {"operator": {
        "name": "inpainting", "mask_type": "box", "box_size": 8}}})
    replaced = load_config(str(task), ["task.operator={name: super_resolution, scale_factor: 2}"])
    assert replaced["task"]["operator"] == {"name": "super_resolution", "scale_factor": 2}


# ---- Sampler parameters: declared per class, checked in build_sampler (the Python API too) -------
def test_declared_params_match_every_constructor() -> None:
    """Each sampler's declared parameters are exactly what its constructor chain accepts."""
    for name in list_samplers():
        accepted = set()
        for klass in _REGISTRY[name].__mro__:
            if "__init__" not in vars(klass) or not issubclass(klass, Sampler):
                continue
            params = inspect.signature(klass.__init__).parameters
            accepted |= {p for p, v in params.items() if p != "self" and v.kind is not v.VAR_KEYWORD}
            if not any(v.kind is v.VAR_KEYWORD for v in params.values()):
                break
        assert set(specs_of(_REGISTRY[name])) == accepted, name


@pytest.mark.parametrize("name,params,message", [
    ("ddim", {"steps": 2.7}, "'sampler.steps' must be an integer, got float 2.7"),
    ("dps", {"scale": math.inf}, "'sampler.scale' must be a finite number"),
    ("dpps", {"n_max": 1}, "'sampler.n_max' must be in [2, inf)"),
    ("gdp", {"blind": "yes"}, "'sampler.blind' must be true or false"),
    ("diffpir", {"eta": -0.1}, "'sampler.eta' must be in [0, 1]"),
])
def test_build_sampler_checks_params(name: str, params: Dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as err:
        build_sampler(name, **params)
    assert message in str(err.value)
    assert build_sampler(name, steps=4).steps == 4  # the defaults pass


# ---- B. checkpoints ----------------------------------------------------------------------------
def _bad_checkpoint(kind: str, folder: Path, good: Path) -> Path:
    path = folder / f"{kind}.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("<html>Google Drive: virus scan warning</html>\n")
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        payload = torch.load(good, weights_only=True)
        torch.save({"flags": list(payload["flags"].items()), "state_dict": payload["state_dict"]}, path)
    return path


@pytest.mark.parametrize("kind,what", [("empty", "empty (0 bytes)"), ("text", "not a torch checkpoint"),
                                       ("truncated", "not a torch checkpoint"), ("flags", "not a mapping")])
def test_bad_checkpoint_is_one_line(capsys, tmp_path: Path, base_cfg: Dict[str, Any], tiny_checkpoint: Path,
                                    kind: str, what: str) -> None:
    ckpt = _bad_checkpoint(kind, tmp_path, tiny_checkpoint)
    cfg = {**base_cfg, "model": {"checkpoint": str(ckpt)}}
    line = one_line(capsys, sample_script.main(["--config", str(write_yaml(tmp_path / "c.yaml", cfg))]), 2,
                    str(ckpt), what)
    assert kind == "flags" or "openaipublic" in line  # where to download the public checkpoints


# ---- C. the decoded-pixel cap --------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL's header warning, then our refusal
def test_pixel_cap_refuses_before_decoding(tmp_path: Path) -> None:
    big = tmp_path / "bomb.png"
    Image.new("1", (10_000, 10_000)).save(big)     # one colour: a tiny file declaring 100 megapixels
    assert big.stat().st_size < 100_000 and 10_000 * 10_000 > MAX_PIXELS
    tracemalloc.start()
    with pytest.raises(OSError, match=r"10000x10000 is 100,000,000 pixels.*data.max_pixels"):
        load_image(big)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5_000_000                          # the 1.2 GB float array was never made
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 50)).save(small)
    assert load_image(small, max_pixels=5000).shape == (3, 50, 100)
    with pytest.raises(OSError, match="above the limit of 4,999"):
        load_image(small, max_pixels=4999)


# ---- D. evaluate.py ------------------------------------------------------------------------------
@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(3):
        label = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        (tmp_path / "label").mkdir(exist_ok=True)
        (tmp_path / "recon").mkdir(exist_ok=True)
        Image.fromarray(label).save(tmp_path / "label" / f"im{i}.png")
        Image.fromarray(label if i == 0 else 255 - label).save(tmp_path / "recon" / f"im{i}.png")
    return tmp_path


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_evaluate_skips_unreadable_and_writes_valid_json(capsys, pairs: Path) -> None:
    (pairs / "recon" / "im2.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    code = evaluate_script.main(["--recon", str(pairs / "recon"), "--label", str(pairs / "label"),
                                 "--metrics", "psnr,ssim", "--out", str(pairs / "m")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "1 image pair(s) skipped" in err and "im2: skipped, cannot use the file" in err
    summary = _strict_json((pairs / "m" / "summary.json").read_text())
    # im0 is identical (PSNR +inf, written as null); im1 is scored.
    assert summary["psnr"] is None and 0 < summary["ssim"] < 1
    rows = (pairs / "m" / "per_image.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["stem", "im0", "im1"] and rows[1].split(",")[1] == "inf"


@pytest.mark.parametrize("border,what", [(16, "leaves nothing"), (40, "leaves nothing"), (11, "SSIM needs")])
def test_evaluate_refuses_a_crop_border_too_large(capsys, pairs: Path, border: int, what: str) -> None:
    code = evaluate_script.main(["--recon", str(pairs / "recon"), "--label", str(pairs / "label"),
                                 "--metrics", "psnr,ssim", "--crop-border", str(border), "--out", str(pairs / "m")])
    one_line(capsys, code, 2, f"crop border {border}", "32x32", what)
    assert not (pairs / "m").exists()


# ---- E. train.py -------------------------------------------------------------------------------
@pytest.fixture
def train_cfg(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    (tmp_path / "images").mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
    flags = {"image_size": 32, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2",
             "attention_resolutions": "16", "num_head_channels": 16}
    return write_yaml(tmp_path / "train.yaml", {
        "model": {"flags": flags}, "data": {"input": str(tmp_path / "images")}, "batch_size": 2, "steps": 2,
        "save_every": 1, "log_every": 1, "device": "cpu", "output": str(tmp_path / "run")})


def test_train_resumes_past_a_torn_log_line(capsys, tmp_path: Path, train_cfg: Path) -> None:
    assert train_script.main(["--config", str(train_cfg)]) == 0
    log = tmp_path / "run" / "log.jsonl"
    with open(log, "a") as f:
        f.write('{"step": 3, "loss": 0.')            # a line cut by a kill mid-write
    assert train_script.main(["--config", str(train_cfg), "--set", "steps=3", "--resume"]) == 0
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and log.read_text().endswith("\n")
    capsys.readouterr()
    # A bad line that is not the last one is named, not skipped silently.
    log.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    one_line(capsys, train_script.main(["--config", str(train_cfg), "--set", "steps=4", "--resume"]), 2,
             "log.jsonl line 2")


def test_train_log_append_is_all_or_nothing(tmp_path: Path, monkeypatch) -> None:
    """A short write (disk full) is taken back: the log never holds part of a line."""
    (tmp_path / "log.jsonl").write_text('{"step": 1}\n')
    real_write = train_script.os.write
    monkeypatch.setattr(train_script.os, "write", lambda fd, data: real_write(fd, data[:5]))
    with pytest.raises(OSError, match="could not append"):
        train_script._append_log(tmp_path, [{"loss": 0.5}], 2, 1.0)
    assert (tmp_path / "log.jsonl").read_text() == '{"step": 1}\n'
    monkeypatch.undo()
    row = train_script._append_log(tmp_path, [{"loss": 0.5}, {"loss": 0.25}], 2, 1.0)
    assert row == {"step": 2, "loss": 0.375, "sec_per_step": 0.5}
    assert (tmp_path / "log.jsonl").read_text().splitlines()[1] == json.dumps(row)


def test_train_zero_steps_is_refused(capsys, tmp_path: Path, train_cfg: Path) -> None:
    one_line(capsys, train_script.main(["--config", str(train_cfg), "--set", "steps=0"]), 2, "'steps' must be >= 1")
    assert not (tmp_path / "run").exists()
