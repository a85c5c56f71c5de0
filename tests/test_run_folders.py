"""Run folders (issue 15): the scripts touch only what they wrote, resume mid-trajectory byte for
byte, and end every bad input or fault in one line with the conventional exit status."""
from __future__ import annotations

import errno
import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from guided_diffusion import TINY_FLAGS
from guided_diffusion.files import is_temporary
from runs import RunFolder
from scripts import baseline as baseline_script
from scripts import degrade as degrade_script
from scripts import evaluate as evaluate_script
from scripts import sample as sample_script
from scripts import train as train_script

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")
BAR = re.compile(r"\|\s*\d+/\d+\s*\[")  # a tqdm bar, not a message
ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # tqdm's cursor moves


def snapshot(root: Path) -> Dict[str, Optional[str]]:
    """Every path under root -> sha256 of its bytes (None for a folder)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in sorted(root.rglob("*"))}


def messages(err: str) -> List[str]:
    """The lines of stderr a user reads: tqdm's redrawn bars dropped."""
    lines = (ESCAPE.sub("", line).split("\r")[-1].strip() for line in err.split("\n"))
    return [line for line in lines if line and not BAR.search(line)]


def one_line(capsys, code: int, status: int, *parts: str) -> str:
    lines = messages(capsys.readouterr().err)
    assert code == status and len(lines) == 1, (code, lines)
    assert lines[0].startswith("error: ") and all(p in lines[0] for p in parts), lines[0]
    return lines[0]


def make_images(folder: Path, n: int = 3, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"i{k}.png")
    return folder


def restore_config(checkpoint: Path, images: Path, out: Any, **extra: Any) -> Dict[str, Any]:
    """DPS x2 super-resolution of 32x32 images in 2 steps: a complete run in about a second."""
    cfg = {"model": {"checkpoint": str(checkpoint)}, "sampler": {"name": "dps", "scale": 0.3, "steps": 2},
           "task": {"operator": {"name": "super_resolution", "scale_factor": 2},
                    "noise": {"name": "gaussian", "sigma": 0.05}},
           "data": {"input": str(images)}, "batch_size": 2, "seed": 0, "output": str(out)}
    for key, value in extra.items():
        *parents, last = key.split("__")
        node = cfg
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return cfg


def write(path: Path, cfg: Dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def pngs(folder: Path) -> Dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.glob("*/*.png"))}


# ---- 1. A folder of someone's files is refused by every tool, with or without --overwrite ----------
TOOLS = ("sample", "baseline", "degrade", "train", "evaluate")


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("tool", TOOLS)
def test_a_folder_of_other_files_is_refused_and_left_as_it_was(tmp_path: Path, tiny_checkpoint: Path, capsys,
                                                             tool: str, overwrite: bool) -> None:
    images = make_images(tmp_path / "images", n=2)
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / ".paper.tex.tmp").write_text("draft being saved")
    (project / "sub" / ".notes.tmp").write_text("notes")
    (project / "paper.tex").write_text("\\documentclass{article}")
    flag = ["--overwrite"] if overwrite else []
    if tool in ("sample", "baseline"):
        cfg = write(tmp_path / "cfg.yaml", restore_config(tiny_checkpoint, images, project))
        argv = ["--config", cfg, *(["--output", str(project)] if tool == "baseline" else [])]
    elif tool == "degrade":
        argv = ["--config", write(tmp_path / "cfg.yaml", {"operator": {"name": "colorization"},
                                                          "input": str(images), "output": str(project)})]
    elif tool == "train":
        argv = ["--config", write(tmp_path / "cfg.yaml", {
            "model": {"flags": dict(TINY_FLAGS)}, "data": {"input": str(images)}, "steps": 1, "batch_size": 1,
            "device": "cpu", "output": str(project)})]
    else:
        argv = ["--recon", str(images), "--label", str(images), "--metrics", "psnr", "--out", str(project)]
    main = {"sample": sample_script, "baseline": baseline_script, "degrade": degrade_script,
            "train": train_script, "evaluate": evaluate_script}[tool].main
    before = snapshot(tmp_path)
    one_line(capsys, main(argv + flag), 2, str(project), "not empty and holds no run of this tool")
    assert snapshot(tmp_path) == before


# ---- 2. Outputs inside inputs, and inputs inside outputs --------------------------------------------
@pytest.mark.parametrize("earlier_run", [False, True])
def test_degrade_refuses_the_parent_of_its_input_as_output(tmp_path: Path, capsys, earlier_run: bool) -> None:
    """With --overwrite, output = the folder holding the input: refused before anything is removed,
    also when that folder is an earlier degrade run whose label/ is the input."""
    parent = tmp_path / "data"
    make_images(tmp_path / "clean", n=2)
    if earlier_run:
        assert degrade_script.main(["--config", write(tmp_path / "first.yaml", {
            "operator": {"name": "colorization"}, "input": str(tmp_path / "clean"), "output": str(parent)})]) == 0
        source = parent / "label"
    else:
        source = make_images(parent / "images", n=2)
    capsys.readouterr()
    cfg = write(tmp_path / "cfg.yaml", {"operator": {"name": "colorization"}, "input": str(source),
                                        "output": str(parent)})
    before = snapshot(tmp_path)
    one_line(capsys, degrade_script.main(["--config", cfg, "--overwrite"]), 2,
             f"the input {source} lies inside the output folder {parent}")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["output inside input", "input inside output", "input is the run's recon"])
def test_sample_refuses_overlapping_input_and_output(tmp_path: Path, tiny_checkpoint: Path, capsys,
                                                    where: str) -> None:
    images = make_images(tmp_path / "images", n=2)
    if where == "output inside input":
        cfg, message = restore_config(tiny_checkpoint, images, images / "out"), "lies inside the input folder"
    elif where == "input inside output":
        cfg, message = restore_config(tiny_checkpoint, images, tmp_path), "lies inside the output folder"
    else:
        assert sample_script.main(["--config", write(tmp_path / "a.yaml",
                                                     restore_config(tiny_checkpoint, images, tmp_path / "out"))]) == 0
        capsys.readouterr()
        cfg = restore_config(tiny_checkpoint, tmp_path / "out" / "recon", tmp_path / "out")
        message = "lies inside the output folder"
    path = write(tmp_path / "cfg.yaml", cfg)
    before = snapshot(tmp_path)
    one_line(capsys, sample_script.main(["--config", path, "--overwrite"]), 2, message)
    assert snapshot(tmp_path) == before


# ---- 3. --overwrite replaces the earlier run's files, and only those ---------------------------------
def test_overwrite_leaves_only_the_new_run_and_the_users_files(tmp_path: Path, tiny_checkpoint: Path, capsys) -> None:
    out = tmp_path / "out"
    old = make_images(tmp_path / "old", n=3, seed=1)
    assert sample_script.main(["--config", write(tmp_path / "old.yaml",
                                                 restore_config(tiny_checkpoint, old, out))]) == 0
    # The scores of the old images, in evaluate.py's default folder inside the run: a run of its own.
    assert evaluate_script.main(["--recon", str(out / "recon"), "--label", str(out / "label"),
                                 "--metrics", "psnr"]) == 0
    assert (out / "metrics" / "summary.json").is_file()
    (out / "notes.txt").write_text("my notes on this run")
    (out / "recon" / "mine.txt").write_text("kept beside the images")
    user = {k: v for k, v in snapshot(out).items() if k in ("notes.txt", "recon/mine.txt")}
    new_images = tmp_path / "new"
    new_images.mkdir()
    for k, name in enumerate(("a", "b")):
        Image.fromarray(np.full((32, 32, 3), 40 * k, dtype=np.uint8)).save(new_images / f"{name}.png")
    new = restore_config(tiny_checkpoint, new_images, out, seed=5, sampler={"name": "ddim", "steps": 2})
    path = write(tmp_path / "new.yaml", new)
    refused = sample_script.main(["--config", path])
    assert refused == 2 and "made with sampler.name = 'dps', not 'ddim'" in messages(capsys.readouterr().err)[0]
    assert sample_script.main(["--config", path, "--overwrite"]) == 0
    files = {k for k, v in snapshot(out).items() if v is not None and not k.startswith(".dfrestore/")}
    # No metrics/ left: the old images' scores went with them.
    assert files == {"config.yaml", "comparison.png", "notes.txt", "recon/mine.txt",
                     *(f"{sub}/{s}.png" for sub in ("input", "label", "recon", "baseline") for s in "ab")}
    assert not (out / "metrics").exists()
    assert {k: v for k, v in snapshot(out).items() if k in user} == user
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["seed"] == 5 and saved["sampler"]["name"] == "ddim" and saved["data"]["input"] == str(new_images)


def test_degrade_overwrite_replaces_only_its_own_files(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    make_images(tmp_path / "three", n=3)
    first = write(tmp_path / "a.yaml", {"operator": {"name": "colorization"}, "input": str(tmp_path / "three"),
                                        "output": str(out)})
    assert degrade_script.main(["--config", first]) == 0
    (out / "label" / "mine.txt").write_text("the user's")
    again = write(tmp_path / "b.yaml", {"operator": {"name": "super_resolution", "scale_factor": 2},
                                        "input": str(make_images(tmp_path / "one", n=1)), "output": str(out)})
    one_line(capsys, degrade_script.main(["--config", again]), 2, "holds an earlier degrade run", "--overwrite")
    assert degrade_script.main(["--config", again, "--overwrite"]) == 0
    files = {k for k, v in snapshot(out).items() if v is not None and not k.startswith(".dfrestore/")}
    assert files == {"config.yaml", "operator.pt", "label/mine.txt", "input/i0.png", "label/i0.png",
                     "measurement/i0.npy"}
    assert Image.open(out / "input" / "i0.png").size == (16, 16)


# ---- 4. Outputs get the permissions the umask gives --------------------------------------------------
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_outputs_follow_the_umask(tmp_path: Path, tiny_checkpoint: Path, umask: int, mode: int) -> None:
    images = make_images(tmp_path / "images", n=2)
    previous = os.umask(umask)
    try:
        code = sample_script.main(["--config", write(tmp_path / "cfg.yaml",
                                                     restore_config(tiny_checkpoint, images, tmp_path / "out"))])
    finally:
        os.umask(previous)
    assert code == 0
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(files) >= 10 and {p.relative_to(tmp_path / "out").as_posix() for p in files} >= {
        "config.yaml", "comparison.png", "recon/i0.png", "input/i1.png"}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(mode) for p in files}


# ---- 5, 6. Kill, Ctrl-C and SIGTERM mid-trajectory; the rerun gives the same PNGs -------------------
TRAJECTORY_STEPS = 30
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def trajectory(tmp_path_factory, tiny_checkpoint: Path) -> Dict[str, Any]:
    """A 30-step DiffPIR batch of three images (state saved every step) and its uninterrupted PNGs."""
    root = tmp_path_factory.mktemp("trajectory")
    images = make_images(root / "images", n=3, seed=2)
    cfg = restore_config(tiny_checkpoint, images, root / "reference", batch_size=3, state_every_steps=1,
                         sampler={"name": "diffpir", "steps": TRAJECTORY_STEPS})
    path = write(root / "cfg.yaml", cfg)
    done = subprocess.run(sample_command(path), capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    return {"config": path, "reference": pngs(root / "reference")}


def sample_command(config: str, *extra: str) -> List[str]:
    return [sys.executable, str(REPO / "scripts" / "sample.py"), "--config", config, *extra]


def start_and_wait_for_state(config: str, out: Path, step: int) -> subprocess.Popen:
    """Start the run and return once it has saved the state after `step` steps (or a later one)."""
    proc = subprocess.Popen(sample_command(config, "--set", f"output={out}"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the step"
        try:
            if saved_next_index(out) <= TRAJECTORY_STEPS - 1 - step:
                return proc
        except (ValueError, OSError, RuntimeError):  # no state yet, or one being replaced
            pass
        time.sleep(0.005)


def finish_and_compare(trajectory: Dict[str, Any], out: Path) -> int:
    """Rerun the same command (writing a progress image each step) until it ends; the PNGs must equal
    the uninterrupted run's and no temporary file may remain. Returns the first step index it ran."""
    again = subprocess.run(sample_command(trajectory["config"], "--set", f"output={out}", "--set", "progress_every=1"),
                           capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert again.returncode == 0 and "wrote 3 image(s)" in again.stdout, again.stderr
    assert pngs(out) == trajectory["reference"]
    assert [p for p in out.rglob("*") if is_temporary(p)] == []
    assert list((out / ".dfrestore" / "state").glob("*")) == []
    # progress_every changes no output, so the rerun continued the run: the steps it ran are the
    # progress images it wrote, one per step index from where it resumed down to 0.
    indices = {int(p.stem.split("_")[-1]) for p in (out / "progress" / "i0").glob("x0_hat_*.png")}
    assert indices == set(range(max(indices) + 1))
    return max(indices)


def saved_next_index(out: Path) -> int:
    (state,) = (out / ".dfrestore" / "state").glob("images-*.pt")
    with open(state, "rb") as f:  # one open: the run may replace the file meanwhile
        saved = torch.load(f, weights_only=True)
    assert saved["images"] == [0, 1, 2]
    return int(saved["next_index"])


def test_killed_at_a_random_step_resumes_mid_trajectory_byte_for_byte(tmp_path: Path,
                                                                      trajectory: Dict[str, Any]) -> None:
    out = tmp_path / "out"
    step = random.Random(5).randrange(1, TRAJECTORY_STEPS - 4)
    proc = start_and_wait_for_state(trajectory["config"], out, step)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not list(out.glob("recon/*.png"))
    next_index = saved_next_index(out)
    assert 0 <= next_index <= TRAJECTORY_STEPS - 1 - step
    assert finish_and_compare(trajectory, out) == next_index


@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_end_in_one_line_and_resume(tmp_path: Path, trajectory: Dict[str, Any], signum: int,
                                                       status: int) -> None:
    out = tmp_path / "out"
    proc = start_and_wait_for_state(trajectory["config"], out, random.Random(signum).randrange(1, TRAJECTORY_STEPS - 4))
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    # Progress bars aside, stderr is one line, the last one, and no traceback.
    (last,) = messages(err)
    line = re.fullmatch(r"interrupted at image 1 of 3, step (\d+) of (\d+); run the same command to resume", last)
    assert line is not None and err.endswith(f"\n{last}\n"), err
    step, steps = int(line.group(1)), int(line.group(2))
    assert steps == TRAJECTORY_STEPS and 1 <= step < steps
    # The state of the last step reached is saved on the way out: the rerun starts right after it.
    assert saved_next_index(out) == steps - 1 - step
    assert finish_and_compare(trajectory, out) == steps - 1 - step


def test_ctrl_c_before_the_first_image_is_one_line(tmp_path: Path, tiny_checkpoint: Path, capsys,
                                                  monkeypatch) -> None:
    from runs import Interrupted, restore

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise Interrupted(signal.SIGINT)
    monkeypatch.setattr(restore, "claim_output", interrupted)
    images = make_images(tmp_path / "images", n=1)
    code = sample_script.main(["--config", write(tmp_path / "cfg.yaml",
                                                 restore_config(tiny_checkpoint, images, tmp_path / "out"))])
    assert code == 130 and messages(capsys.readouterr().err) == [
        "interrupted at the start, before the first image; run the same command to resume"]


# ---- 7. Resume compares only what changes the outputs ------------------------------------------------
def test_resume_ignores_batch_size_path_spelling_and_a_larger_limit(tmp_path: Path, tiny_checkpoint: Path, capsys,
                                                                   monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    images = make_images(tmp_path / "images", n=3)
    first = write(tmp_path / "first.yaml", restore_config(tiny_checkpoint, images, "out", data__limit=2, batch_size=1))
    assert sample_script.main(["--config", first]) == 0
    done = snapshot(tmp_path / "out" / "recon")
    assert sorted(done) == ["i0.png", "i1.png"]
    capsys.readouterr()
    more = restore_config(tiny_checkpoint, images, f"{tmp_path / 'out'}/", data__limit=3, batch_size=2)
    assert sample_script.main(["--config", write(tmp_path / "more.yaml", more)]) == 0
    assert "wrote 1 image(s)" in capsys.readouterr().out
    recon = snapshot(tmp_path / "out" / "recon")
    assert sorted(recon) == ["i0.png", "i1.png", "i2.png"] and {k: recon[k] for k in done} == done
    # The three images equal a run made in one go.
    whole = restore_config(tiny_checkpoint, images, str(tmp_path / "whole"), batch_size=3)
    assert sample_script.main(["--config", write(tmp_path / "whole.yaml", whole)]) == 0
    assert pngs(tmp_path / "whole") == pngs(tmp_path / "out")


@pytest.mark.parametrize("key,value,message", [("seed", 1, "made with seed = 0, not 1"),
                                               ("sampler__scale", 0.5, "made with sampler.scale = 0.3, not 0.5")])
def test_resume_refuses_an_output_changing_key_naming_it(tmp_path: Path, tiny_checkpoint: Path, capsys, key: str,
                                                         value: Any, message: str) -> None:
    images = make_images(tmp_path / "images", n=2)
    assert sample_script.main(["--config", write(tmp_path / "a.yaml",
                                                 restore_config(tiny_checkpoint, images, tmp_path / "out"))]) == 0
    capsys.readouterr()
    changed = write(tmp_path / "b.yaml", restore_config(tiny_checkpoint, images, tmp_path / "out", **{key: value}))
    before = snapshot(tmp_path)
    one_line(capsys, sample_script.main(["--config", changed]), 2, str(tmp_path / "out"), message)
    assert snapshot(tmp_path) == before


# ---- 8. A run that failed before its first image does not block another config ---------------------
@pytest.mark.parametrize("failure", ["every input unreadable", "interrupted in the first batch"])
def test_a_run_without_images_does_not_block_another_config(tmp_path: Path, tiny_checkpoint: Path, capsys,
                                                           monkeypatch, failure: str) -> None:
    from runs import Interrupted
    from runs import resume

    images = make_images(tmp_path / "images", n=2)
    out = tmp_path / "out"
    if failure == "every input unreadable":
        broken = tmp_path / "broken"
        broken.mkdir()
        (broken / "x.png").write_bytes(b"")
        (broken / "y.png").write_text("not an image")
        assert sample_script.main(["--config", write(tmp_path / "first.yaml",
                                                     restore_config(tiny_checkpoint, broken, out))]) == 1
    else:
        flush = resume.TrajectoryStates.flush
        fired = []

        def flush_then_interrupt(self) -> None:  # Ctrl-C right after the first state is saved
            flush(self)
            if not fired:
                fired.append(True)
                raise Interrupted(signal.SIGINT)
        with monkeypatch.context() as patch:
            patch.setattr(resume.TrajectoryStates, "flush", flush_then_interrupt)
            first = restore_config(tiny_checkpoint, images, out, seed=9, state_every_steps=1)
            assert sample_script.main(["--config", write(tmp_path / "first.yaml", first)]) == 130
        assert list((out / ".dfrestore" / "state").glob("*.pt"))
    assert not list(out.glob("recon/*.png")) and (out / "config.yaml").is_file()
    capsys.readouterr()
    assert sample_script.main(["--config", write(tmp_path / "second.yaml",
                                                 restore_config(tiny_checkpoint, images, out))]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 0
    # What it wrote is a fresh run of the new config (no state of the old one was used).
    assert sample_script.main(["--config", write(tmp_path / "fresh.yaml",
                                                 restore_config(tiny_checkpoint, images, tmp_path / "fresh"))]) == 0
    assert pngs(out) == pngs(tmp_path / "fresh")


# ---- 9. A damaged recon/ file is redone --------------------------------------------------------------
@pytest.mark.parametrize("damage", [b"", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"not a png"])
def test_a_damaged_recon_file_is_not_counted_as_done(tmp_path: Path, tiny_checkpoint: Path, capsys,
                                                     damage: bytes) -> None:
    images = make_images(tmp_path / "images", n=2)
    cfg = write(tmp_path / "cfg.yaml", restore_config(tiny_checkpoint, images, tmp_path / "out", batch_size=1))
    assert sample_script.main(["--config", cfg]) == 0
    good = (tmp_path / "out" / "recon" / "i1.png").read_bytes()
    (tmp_path / "out" / "recon" / "i1.png").write_bytes(damage)
    capsys.readouterr()
    assert sample_script.main(["--config", cfg]) == 0
    assert f"wrote 1 image(s) to {tmp_path / 'out'} (1 already done)" in capsys.readouterr().out
    assert (tmp_path / "out" / "recon" / "i1.png").read_bytes() == good


# ---- 10. Output that is a file, a full disk, a failing figure, a corrupt config.yaml ----------------
def test_an_output_that_is_a_file_is_refused(tmp_path: Path, tiny_checkpoint: Path, capsys) -> None:
    images = make_images(tmp_path / "images", n=1)
    (tmp_path / "out").write_text("a file")
    cfg = write(tmp_path / "cfg.yaml", restore_config(tiny_checkpoint, images, tmp_path / "out"))
    before = snapshot(tmp_path)
    one_line(capsys, sample_script.main(["--config", cfg]), 2, f"the output {tmp_path / 'out'} is a file")
    assert snapshot(tmp_path) == before


def test_a_full_disk_ends_in_one_line_and_keeps_the_images_written(tmp_path: Path, tiny_checkpoint: Path, capsys,
                                                                   monkeypatch) -> None:
    from runs import restore

    images = make_images(tmp_path / "images", n=3)
    cfg = write(tmp_path / "cfg.yaml", restore_config(tiny_checkpoint, images, tmp_path / "out", batch_size=1))
    save, saved = restore.save_image, []

    def save_until_full(x: torch.Tensor, path: Path) -> None:
        if len(saved) == 5:  # input, label, baseline, recon of i0, then input of i1
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(path)
        save(x, path)
    with monkeypatch.context() as patch:
        patch.setattr(restore, "save_image", save_until_full)
        code = sample_script.main(["--config", cfg])
    lines = messages(capsys.readouterr().err)
    assert code == 1 and lines == [f"error: cannot write {tmp_path / 'out' / 'label' / 'i1.png'}: No space left on "
                                   f"device; the files written before stay, run the same command to resume"]
    assert sorted(p.name for p in (tmp_path / "out" / "recon").iterdir()) == ["i0.png"]
    # Space freed: the same command finishes the run, and it equals an uninterrupted one.
    assert sample_script.main(["--config", cfg]) == 0
    assert sample_script.main(["--config", cfg, "--set", f"output={tmp_path / 'whole'}"]) == 0
    assert pngs(tmp_path / "out") == pngs(tmp_path / "whole")


@pytest.mark.parametrize("tool", ["sample", "baseline"])
def test_a_failing_comparison_png_is_a_warning(tmp_path: Path, tiny_checkpoint: Path, capsys, monkeypatch,
                                               tool: str) -> None:
    from runs import comparison

    def full(x: torch.Tensor, path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(comparison, "save_image", full)
    images = make_images(tmp_path / "images", n=2)
    cfg = write(tmp_path / "cfg.yaml", restore_config(tiny_checkpoint, images, tmp_path / "out"))
    main = sample_script.main if tool == "sample" else baseline_script.main
    assert main(["--config", cfg, *(["--output", str(tmp_path / "out")] if tool == "baseline" else [])]) == 0
    assert messages(capsys.readouterr().err) == ["warning: comparison.png not written: No space left on device"]
    assert sorted(p.name for p in (tmp_path / "out" / "recon").iterdir()) == ["i0.png", "i1.png"]
    assert not (tmp_path / "out" / "comparison.png").exists()


@pytest.mark.parametrize("with_images", [True, False])
def test_a_corrupt_config_yaml_blocks_only_a_run_with_images(tmp_path: Path, tiny_checkpoint: Path, capsys,
                                                             with_images: bool) -> None:
    """Beside finished images: refused in one line, nothing touched. Before any image (a first run
    whose inputs were all unreadable): the folder is taken over."""
    images = make_images(tmp_path / "images", n=2)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"")
    first = restore_config(tiny_checkpoint, images if with_images else broken, tmp_path / "out")
    assert sample_script.main(["--config", write(tmp_path / "first.yaml", first)]) == (0 if with_images else 1)
    (tmp_path / "out" / "config.yaml").write_bytes(b"seed: [unclosed\n\xff")
    capsys.readouterr()
    cfg = write(tmp_path / "cfg.yaml", restore_config(tiny_checkpoint, images, tmp_path / "out"))
    if with_images:
        before = snapshot(tmp_path)
        one_line(capsys, sample_script.main(["--config", cfg]), 2,
                 f"{tmp_path / 'out' / 'config.yaml'} is unreadable", "--overwrite")
        assert snapshot(tmp_path) == before
    else:
        assert sample_script.main(["--config", cfg]) == 0
        assert sorted(p.name for p in (tmp_path / "out" / "recon").iterdir()) == ["i0.png", "i1.png"]
        assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["data"]["input"] == str(images)


# ---- 11. Prior sampling where every sample fails -------------------------------------------------------
def test_prior_sampling_with_nan_weights_reports_every_failure(tmp_path: Path, tiny_checkpoint: Path, capsys) -> None:
    state = torch.load(tiny_checkpoint, weights_only=True)
    state["state_dict"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                           for k, v in state["state_dict"].items()}
    torch.save(state, tmp_path / "nan.pt")
    cfg = {"model": {"checkpoint": str(tmp_path / "nan.pt")}, "sampler": {"name": "ddim", "steps": 2},
           "num_samples": 3, "batch_size": 2, "output": str(tmp_path / "out")}
    code = sample_script.main(["--config", write(tmp_path / "cfg.yaml", cfg)])
    captured = capsys.readouterr()
    lines = messages(captured.err)
    assert code == 1 and "Traceback" not in captured.err and "wrote 0 image(s)" in captured.out
    assert lines[0] == "3 image(s) failed:" and len(lines) == 4
    assert [line.split(":")[0] for line in lines[1:]] == ["00000.png", "00001.png", "00002.png"]
    assert all("ddim: non-finite values at step index" in line for line in lines[1:])
    assert not (tmp_path / "out" / "grid.png").exists() and not list((tmp_path / "out").glob("samples/*"))


# ---- 12. An operator whose way back does not fit the model -------------------------------------------
def test_an_operator_that_breaks_the_sampler_is_refused_up_front(tmp_path: Path, tiny_checkpoint: Path,
                                                                capsys) -> None:
    images = make_images(tmp_path / "images", n=1)
    cfg = write(tmp_path / "cfg.yaml", restore_config(tiny_checkpoint, images, tmp_path / "out",
                                                      task__operator={"name": "super_resolution", "scale_factor": 3}))
    one_line(capsys, sample_script.main(["--config", cfg]), 2,
             "task.operator 'super_resolution' cannot act on the model's 32x32 images")
    assert not (tmp_path / "out").exists()


# ---- 13. The run folder itself -------------------------------------------------------------------------
def test_remove_outputs_deletes_only_recorded_files_inside_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "run"
    run = RunFolder.claim(root, "sample")
    for rel in ("recon/a.png", "b.txt", "deep/er/c.png"):
        run.path(rel).parent.mkdir(parents=True, exist_ok=True)
        run.path(rel).write_text(rel)
    with pytest.raises(ValueError, match="only inside its folder"):
        run.path("../outside.txt")
    with pytest.raises(ValueError, match="only inside its folder"):
        run.path(tmp_path / "outside.txt")
    (root / "recon" / "user.png").write_text("the user's")
    (root / "user.txt").write_text("the user's")
    (tmp_path / "outside.txt").write_text("outside")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.png").write_text("behind a link")
    (root / "link").symlink_to(tmp_path / "elsewhere")
    # Names no run of this tool records (outside, or behind a link the user put there), and a last
    # line torn by a kill: the start of a longer name that happens to name a user's file.
    with open(root / ".dfrestore" / "files.txt", "a") as f:
        f.write(f"../outside.txt\n{tmp_path / 'outside.txt'}\nlink/x.png\nuser.txt")
    # Temporary files: a killed run's inside the folder are removed, a look-alike behind the link is not.
    (root / "recon" / ".a.png.k2j4h5g6.dfrestore-partial").write_text("torn")
    (tmp_path / "elsewhere" / ".y.png.k2j4h5g6.dfrestore-partial").write_text("not the run's")
    RunFolder.claim(root, "sample")
    assert not (root / "recon" / ".a.png.k2j4h5g6.dfrestore-partial").exists()
    keep = {k: v for k, v in snapshot(tmp_path).items() if k not in ("run/recon/a.png", "run/b.txt",
                                                                    "run/deep/er/c.png", "run/deep", "run/deep/er")}
    again = RunFolder(root, "sample")
    assert again.remove_outputs() == 3
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("run/.dfrestore/")} == \
        {k: v for k, v in keep.items() if not k.startswith("run/.dfrestore/")}
    assert RunFolder.marker_kind(root) == "sample" and again.outputs() == []


def test_the_state_of_a_partly_written_batch_is_dropped(tmp_path: Path) -> None:
    """A kill between two images' files leaves the batch's state behind; the rerun redoes the other
    images from the start and removes that state instead of keeping it forever."""
    from runs.folder import RunFolder
    from runs.resume import TrajectoryStates
    from runs.restore import BatchRunner
    from runs.interrupt import Progress

    run = RunFolder.claim(tmp_path / "out", "sample")
    states = TrajectoryStates(run, every_steps=1, every_minutes=0)
    for batch in ([0, 1, 2], [3, 4], [7, 8]):
        (run.state_dir).mkdir(parents=True, exist_ok=True)
        (run.state_dir / f"images-{'-'.join(map(str, batch))}.pt").write_bytes(b"state")
    runner = BatchRunner({}, None, None, None, states, Progress())
    # Image 0 was written before the kill; 7 and 8 belong to another rank's shard.
    plan = runner.plan(mine=[0, 1, 2, 3, 4, 5], pending=[1, 2, 3, 4, 5], batch_size=2)
    assert plan == [[3, 4], [1, 2], [5]]
    assert states.saved_batches() == [[3, 4], [7, 8]]
