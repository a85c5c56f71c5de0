"""Run folders under a hostile or careless user (issue 24): links where the tool writes, two runs on
one folder, foreign or damaged saved states, signals at every stage, a sampler without its
measurement. Each case ends in one line (or a correct run) and touches nothing outside the run's
own files."""
from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional

import pytest
import torch
import yaml

from runs import Interrupted, RunFolder, RunFolderError, interruptible
from scripts import evaluate as evaluate_script
from scripts import reproduce as reproduce_script
from scripts import sample as sample_script
from test_run_folders import ENV, REPO, make_images, messages, pngs, restore_config, snapshot, write

pytestmark = pytest.mark.usefixtures("one_thread")


def only_line(capsys) -> str:
    (line,) = messages(capsys.readouterr().err)
    return line


# ---- 1. Links where the tool writes ------------------------------------------------------------------
def prior_config(checkpoint: Path, out: Path, seed: int = 0) -> Dict[str, Any]:
    return {"model": {"checkpoint": str(checkpoint)}, "sampler": {"name": "ddim", "steps": 2},
            "num_samples": 2, "seed": seed, "output": str(out)}


@pytest.mark.parametrize("place", ["recon", "samples", ".dfrestore/state", ".dfrestore"])
def test_a_link_where_the_run_writes_is_refused_and_the_users_folder_is_kept(tmp_path: Path, tiny_checkpoint: Path,
                                                                           capsys, place: str) -> None:
    out, user = tmp_path / "out", tmp_path / "user"
    images = make_images(tmp_path / "images", n=2)
    first = (prior_config(tiny_checkpoint, out) if place == "samples"
             else restore_config(tiny_checkpoint, images, out, state_every_steps=1))
    assert sample_script.main(["--config", write(tmp_path / "first.yaml", first)]) == 0
    # The user's folder: files named as the run's own (an image, saved states), put behind a link.
    if place == ".dfrestore":
        shutil.move(out / ".dfrestore", user)
    else:
        user.mkdir()
        shutil.rmtree(out / place, ignore_errors=True)
    for name in ("i0.png", "00000.png", "images-0-1.pt", "model.pt"):
        (user / name).write_bytes(f"the user's {name}".encode())
    (out / place).symlink_to(user, target_is_directory=True)
    capsys.readouterr()
    changed, same = write(tmp_path / "second.yaml", {**first, "seed": 3}), write(tmp_path / "same.yaml", first)
    before = snapshot(tmp_path)
    for config, flags in ((changed, ["--overwrite"]), (same, [])):
        assert sample_script.main(["--config", config, *flags]) == 2
        assert only_line(capsys) == (f"error: {config}: {out / place} is a symbolic link (to {user}); a run writes "
                                     f"only real files inside its folder: remove the link or choose another output "
                                     f"(nothing was touched)")
        assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["sample", "train"])
def test_a_link_in_any_own_place_is_refused_by_every_claim(tmp_path: Path, kind: str) -> None:
    from runs.folder import OWN_PLACES

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for place in OWN_PLACES:
        root = tmp_path / kind / place.replace("/", "_")
        RunFolder.claim(root, kind).release()
        target = root / place
        if target.is_dir():
            shutil.rmtree(target)
        target.unlink(missing_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(elsewhere)
        for overwrite in (False, True):
            with pytest.raises(RunFolderError, match=re.escape(f"{target} is a symbolic link (to {elsewhere})")):
                RunFolder.claim(root, kind, overwrite=overwrite)
    assert list(elsewhere.iterdir()) == []


def test_an_output_file_replaced_by_a_link_is_redone_and_the_users_file_kept(tmp_path: Path, tiny_checkpoint: Path,
                                                                           capsys) -> None:
    out, mine = tmp_path / "out", tmp_path / "mine.png"
    cfg = write(tmp_path / "cfg.yaml", restore_config(tiny_checkpoint, make_images(tmp_path / "images", n=1), out))
    assert sample_script.main(["--config", cfg]) == 0
    made = (out / "recon" / "i0.png").read_bytes()
    shutil.copy(out / "label" / "i0.png", mine)  # a complete PNG of the user's
    (out / "recon" / "i0.png").unlink()
    (out / "recon" / "i0.png").symlink_to(mine)
    before = mine.read_bytes()
    capsys.readouterr()
    assert sample_script.main(["--config", cfg]) == 0
    assert f"wrote 1 image(s) to {out}\n" in capsys.readouterr().out  # the link did not count as done
    assert not (out / "recon" / "i0.png").is_symlink() and (out / "recon" / "i0.png").read_bytes() == made
    assert mine.read_bytes() == before


def test_a_link_planted_deeper_is_never_written_nor_deleted_through(tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "x0_hat_0001.png").write_text("the user's")
    run = RunFolder.claim(tmp_path / "run", "sample")
    run.path("progress/i0/x0_hat_0002.png").parent.mkdir(parents=True)
    (tmp_path / "run" / "progress" / "i0" / "x0_hat_0002.png").write_text("the run's")
    run.record(["progress/i1/x0_hat_0001.png"])
    (tmp_path / "run" / "progress" / "i1").symlink_to(user)
    (user / ".x.png.k2j4h5g6.dfrestore-partial").write_text("looks temporary, is the user's")
    with pytest.raises(RunFolderError, match=re.escape(f"{tmp_path / 'run' / 'progress' / 'i1'} is a symbolic link")):
        run.path("progress/i1/x0_hat_0001.png")
    before = snapshot(user)
    again = RunFolder.claim(tmp_path / "run", "sample", overwrite=True)
    assert snapshot(user) == before and not (tmp_path / "run" / "progress" / "i0").exists()
    again.release()
    run.release()


# ---- 2. One run per folder ---------------------------------------------------------------------------
HOLD = ("import sys; from runs import RunFolder; RunFolder.claim(sys.argv[1], 'sample'); "
        "print('holding', flush=True); sys.stdin.read()")


def test_a_folder_in_use_is_refused_naming_the_holder_and_a_killed_holders_lock_is_taken_over(
        tmp_path: Path, tiny_checkpoint: Path, capsys) -> None:
    out = tmp_path / "out"
    images = make_images(tmp_path / "images", n=2)
    cfg = write(tmp_path / "cfg.yaml", restore_config(tiny_checkpoint, images, out))
    assert sample_script.main(["--config", cfg]) == 0
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=REPO, env=ENV)
    try:
        assert holder.stdout.readline() == "holding\n"
        # What a run in progress has: a state and a temporary file being written.
        (out / ".dfrestore" / "state").mkdir(exist_ok=True)
        (out / ".dfrestore" / "state" / ".images-0-1.pt.k2j4h5g6.dfrestore-partial").write_text("being written")
        (out / ".dfrestore" / "state" / "images-0-1.pt").write_text("a state")
        capsys.readouterr()
        other = write(tmp_path / "other.yaml", restore_config(tiny_checkpoint, images, out, seed=1))
        before = snapshot(tmp_path)
        for argv in (["--config", cfg], ["--config", other, "--overwrite"]):
            assert sample_script.main(argv) == 2
            line = only_line(capsys)
            assert re.fullmatch(rf"error: .*: the output folder {re.escape(str(out))} is in use by another run "
                                rf"\(pid {holder.pid} on {re.escape(socket.gethostname())}, started "
                                r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC: python\S* -c .*\); wait for it to end or "
                                r"choose another output \(nothing was touched\)", line), line
            assert snapshot(tmp_path) == before
        # torchrun ranks other than 0 join the folder their rank 0 holds.
        assert RunFolder.claim(out, "sample", join=True, clean_temporary=False).root == out
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed (SIGKILL): its lock file stays, naming it, and is taken over.
    assert f'"pid": {holder.pid}' in (out / ".dfrestore" / "lock").read_text()
    assert sample_script.main(["--config", other, "--overwrite"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 1
    assert (out / ".dfrestore" / "lock").read_text() == ""  # released: nobody named


def test_two_runs_started_together_on_a_new_folder_one_wins(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The issue's case: two seeds started at once on one new folder. Exactly one run writes it;
    the other ends in one line (in use, or made with another seed when the first already ended)."""
    images = make_images(tmp_path / "images", n=2)
    out = tmp_path / "out"
    configs = [write(tmp_path / f"seed{s}.yaml", restore_config(tiny_checkpoint, images, out, seed=s,
                                                                sampler={"name": "dps", "scale": 0.3, "steps": 20}))
               for s in (0, 1)]
    procs = [subprocess.Popen([sys.executable, str(REPO / "scripts" / "sample.py"), "--config", c],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=ENV)
             for c in configs]
    results = [(p.pid, *p.communicate(timeout=300), p.returncode) for p in procs]
    assert sorted(r[3] for r in results) == [0, 2], [r[2][-500:] for r in results]
    (winner,) = [k for k, r in enumerate(results) if r[3] == 0]
    (line,) = messages(results[1 - winner][2])
    assert (f"is in use by another run (pid {results[winner][0]} " in line
            or f"made with seed = {winner}, not {1 - winner}" in line), line
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == winner
    alone = restore_config(tiny_checkpoint, images, tmp_path / "alone", seed=winner,
                           sampler={"name": "dps", "scale": 0.3, "steps": 20})
    assert sample_script.main(["--config", write(tmp_path / "alone.yaml", alone)]) == 0
    assert pngs(out) == pngs(tmp_path / "alone")


# ---- 3. Saved states: checked whole, a bad one dropped in one line -------------------------------------
@pytest.fixture(scope="module")
def stopped(tmp_path_factory, tiny_checkpoint: Path) -> Dict[str, Any]:
    """A run of two images in one batch stopped after its first saved state, and the PNGs of the
    same config run without a stop."""
    from runs import resume

    root = tmp_path_factory.mktemp("stopped")
    images = make_images(root / "images", n=2, seed=4)
    cfg = write(root / "cfg.yaml", restore_config(tiny_checkpoint, images, root / "run", state_every_steps=1,
                                                  sampler={"name": "dps", "scale": 0.3, "steps": 4}))
    flush, fired = resume.TrajectoryStates.flush, []

    def flush_then_stop(self) -> None:  # Ctrl-C right after the first state is saved
        flush(self)
        if not fired:
            fired.append(True)
            raise Interrupted(signal.SIGINT)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(resume.TrajectoryStates, "flush", flush_then_stop)
        assert sample_script.main(["--config", cfg]) == 130
    assert sample_script.main(["--config", cfg, "--set", f"output={root / 'whole'}"]) == 0
    return {"config": cfg, "run": root / "run", "whole": pngs(root / "whole")}


STATE = Path(".dfrestore/state/images-0-1.pt")


def edit(key: str, value: Optional[Callable[[Any], Any]] = None) -> Callable[[Path], None]:
    """Replace state[key] by value(state[key]); without a value, delete the key."""
    def change(out: Path) -> None:
        state = torch.load(out / STATE, weights_only=True)
        if value is None:
            del state[key]
        else:
            state[key] = value(state[key])
        torch.save(state, out / STATE)
    return change


def rename(name: str) -> Callable[[Path], None]:
    return lambda out: (out / STATE).rename(out / STATE.parent / name)


DAMAGE = {  # how the state was damaged -> (damage, file named, words of the reason)
    "a name that is no batch": (rename("images-abc.pt"), "images-abc.pt", "its name is not images-<"),
    "an image past the run": (rename("images-0-999.pt"), "images-0-999.pt", "the run has 2 image(s)"),
    "next_index 999": (edit("next_index", lambda i: 999), "images-0-1.pt", "next_index 999 is not a step index"),
    "next_index -5": (edit("next_index", lambda i: -5), "images-0-1.pt", "next_index -5 is not a step index"),
    "no x_t": (edit("x_t"), "images-0-1.pt", "it lacks x_t"),
    "x_t of another shape": (edit("x_t", lambda x: x[:1]), "images-0-1.pt", "its x_t is (1, 3, 32, 32)"),
    "x_t in float64": (edit("x_t", lambda x: x.double()), "images-0-1.pt", "torch.float64, not"),
    "one generator for two images": (edit("generators", lambda g: g[:1]), "images-0-1.pt",
                                     "it holds 1 generator state(s) for 2 image(s)"),
    "generator states cut short": (edit("generators", lambda g: [s[:100] for s in g]), "images-0-1.pt",
                                   "its generator states are not 5056-byte states"),
    "generator states of random bytes": (edit("generators", lambda g: [torch.randint(0, 256, s.shape, dtype=torch.uint8,
                                                                                     generator=torch.Generator().manual_seed(0))
                                                                       for s in g]),
                                         "images-0-1.pt", "its generator states are refused"),
    "parameters of another operator": (edit("operator", lambda p: {"not_a_parameter": torch.ones(3)}), "images-0-1.pt",
                                       "its operator parameters are not this operator's"),
    "not a torch file": (lambda out: (out / STATE).write_bytes(b"PK\x03\x04 not a zip"), "images-0-1.pt",
                         "it cannot be read"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_or_foreign_state_is_dropped_in_one_line_and_the_batch_restarts(
        tmp_path: Path, stopped: Dict[str, Any], capsys, damage: str) -> None:
    out = tmp_path / "out"
    shutil.copytree(stopped["run"], out)
    spoil, name, reason = DAMAGE[damage]
    spoil(out)
    capsys.readouterr()
    assert sample_script.main(["--config", stopped["config"], "--set", f"output={out}"]) == 0
    line = only_line(capsys)
    assert line.startswith(f"warning: dropped the saved state {out / STATE.parent / name}: ") and reason in line, line
    assert line.endswith("; its images start again from the first step")
    assert pngs(out) == stopped["whole"] and list((out / STATE.parent).iterdir()) == []


def test_an_intact_state_resumes_silently(tmp_path: Path, stopped: Dict[str, Any], capsys) -> None:
    out = tmp_path / "out"
    shutil.copytree(stopped["run"], out)
    capsys.readouterr()
    assert sample_script.main(["--config", stopped["config"], "--set", f"output={out}"]) == 0
    assert messages(capsys.readouterr().err) == [] and pngs(out) == stopped["whole"]


@pytest.mark.parametrize("key,value,said", [("seed", "1", "seed = 0, not 1"),
                                            ("sampler.steps", "3", "sampler.steps = 4, not 3")])
def test_a_changed_key_drops_a_lone_state_saying_so(tmp_path: Path, stopped: Dict[str, Any], capsys, key: str,
                                                    value: str, said: str) -> None:
    out = tmp_path / "out"
    shutil.copytree(stopped["run"], out)
    capsys.readouterr()
    assert sample_script.main(["--config", stopped["config"], "--set", f"output={out}", "--set", f"{key}={value}"]) == 0
    assert only_line(capsys) == (f"warning: dropped 1 saved mid-trajectory state(s) in {out}: they were made with "
                                 f"{said}; the run starts again")
    fresh = tmp_path / "fresh"
    assert sample_script.main(["--config", stopped["config"], "--set", f"output={fresh}", "--set", f"{key}={value}"]) == 0
    assert pngs(out) == pngs(fresh)


# ---- 4. Signals at every stage -----------------------------------------------------------------------
class Escaped(BaseException):
    """A real signal that the code under test let through (the test fails instead of pytest stopping)."""


@pytest.fixture
def signal_guard() -> Iterator[None]:
    def escaped(signum: int, frame) -> None:
        raise Escaped(signal.Signals(signum).name)
    previous = {s: signal.signal(s, escaped) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in previous.items():
        signal.signal(s, handler)


def signal_inside_torch_load(monkeypatch, signum: int, when: Callable[[str], bool] = lambda f: True) -> None:
    """torch.load receives `signum` (a real signal, to this process) as it starts reading a file."""
    real = torch.load

    def load(f, *args: Any, **kwargs: Any) -> Any:
        if when(str(f)):
            signal.raise_signal(signum)
        return real(f, *args, **kwargs)
    monkeypatch.setattr(torch, "load", load)


SIGNALS = [(signal.SIGINT, 130), (signal.SIGTERM, 143)]


@pytest.mark.parametrize("signum,status", SIGNALS)
def test_a_signal_while_the_checkpoint_is_read_is_an_interruption(tmp_path: Path, tiny_checkpoint: Path, capsys,
                                                                  monkeypatch, signal_guard, signum: int,
                                                                  status: int) -> None:
    images = make_images(tmp_path / "images", n=1)
    cfg = write(tmp_path / "cfg.yaml", restore_config(tiny_checkpoint, images, tmp_path / "out"))
    signal_inside_torch_load(monkeypatch, signum)
    assert sample_script.main(["--config", cfg]) == status
    assert only_line(capsys) == "interrupted at the start, before the first image; run the same command to resume"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("loader", ["read_checkpoint", "load_train_state", "load_state_dict"])
def test_every_checkpoint_loader_lets_an_interruption_through(tiny_checkpoint: Path, monkeypatch, signal_guard,
                                                              loader: str) -> None:
    """The model loader, train.py --resume's and the metric networks' weights."""
    from evaluation.weights import load_state_dict
    from guided_diffusion import read_checkpoint
    from training import load_train_state

    call = {"read_checkpoint": lambda: read_checkpoint(str(tiny_checkpoint)),
            "load_train_state": lambda: load_train_state(tiny_checkpoint),
            "load_state_dict": lambda: load_state_dict(tiny_checkpoint, "LPIPS")}[loader]
    signal_inside_torch_load(monkeypatch, signal.SIGTERM)
    with pytest.raises(Interrupted) as stop, interruptible():
        call()
    assert stop.value.exit_status == 143


@pytest.mark.parametrize("signum,status", SIGNALS)
def test_a_signal_while_a_state_loads_is_an_interruption_and_keeps_the_state(
        tmp_path: Path, stopped: Dict[str, Any], capsys, monkeypatch, signal_guard, signum: int, status: int) -> None:
    out = tmp_path / "out"
    shutil.copytree(stopped["run"], out)
    saved = (out / STATE).read_bytes()
    capsys.readouterr()
    with monkeypatch.context() as patch:
        signal_inside_torch_load(patch, signum, when=lambda f: f.endswith(STATE.name))
        assert sample_script.main(["--config", stopped["config"], "--set", f"output={out}"]) == status
    assert only_line(capsys) == "interrupted at image 1 of 2; run the same command to resume"
    assert (out / STATE).read_bytes() == saved
    assert sample_script.main(["--config", stopped["config"], "--set", f"output={out}"]) == 0
    assert pngs(out) == stopped["whole"]


def catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler for `signum` (Linux: /proc/<pid>/status, SigCgt)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return bool(int(re.search(r"SigCgt:\s*([0-9a-f]+)", status).group(1), 16) >> (signum - 1) & 1)


@pytest.mark.parametrize("script", ["sample", "evaluate", "reproduce"])
@pytest.mark.parametrize("signum,status", SIGNALS)
def test_a_signal_during_the_imports_is_one_line(script: str, signum: int, status: int) -> None:
    """SIGTERM has no handler until the script installs its own, first thing: the signal is sent
    then, while torch and the rest are still being imported."""
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / f"{script}.py"), "--help"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=ENV)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "the script ended before it was sent the signal"
        if catches(proc.pid, signal.SIGTERM):
            break
        time.sleep(0.002)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out, err) == (status, "", "interrupted while starting, before any work\n")


@pytest.mark.parametrize("signum,status", SIGNALS)
def test_a_signal_in_evaluate_is_one_line(tmp_path: Path, capsys, monkeypatch, signal_guard, signum: int,
                                          status: int) -> None:
    images = make_images(tmp_path / "images", n=2)

    def scoring(*args: Any, **kwargs: Any) -> None:
        signal.raise_signal(signum)
    monkeypatch.setattr(evaluate_script, "evaluate", scoring)
    code = evaluate_script.main(["--recon", str(images), "--label", str(images), "--metrics", "psnr",
                                 "--out", str(tmp_path / "metrics")])
    assert code == status
    assert only_line(capsys) == "interrupted; run the command again, with --overwrite if a result file was written"
    assert not (tmp_path / "metrics").exists()


def test_a_full_disk_in_evaluate_is_one_line_naming_the_file(tmp_path: Path, capsys, monkeypatch) -> None:
    images = make_images(tmp_path / "images", n=2)

    fsync = os.fsync

    def full(fd: int) -> None:  # the disk fills up as the scores are written
        if "per_image.csv" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)
    argv = ["--recon", str(images), "--label", str(images), "--metrics", "psnr", "--out", str(tmp_path / "metrics")]
    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", full)
        assert evaluate_script.main(argv) == 1
    assert only_line(capsys) == (f"error: cannot write {tmp_path / 'metrics' / 'per_image.csv'}: No space left on "
                                 f"device; the files written before stay, run the command again, with --overwrite if "
                                 f"a result file was written")
    assert [p.name for p in (tmp_path / "metrics").iterdir()] == [".dfrestore"]
    assert evaluate_script.main(argv) == 0


@pytest.mark.parametrize("signum,status", SIGNALS)
def test_a_signal_in_reproduce_is_one_line(tmp_path: Path, capsys, monkeypatch, signal_guard, signum: int,
                                           status: int) -> None:
    def running(*args: Any, **kwargs: Any) -> None:
        signal.raise_signal(signum)
    monkeypatch.setattr(reproduce_script, "run_cells", running)
    code = reproduce_script.main(["--table", "demo", "--limit", "1", "--results", str(tmp_path / "runs"),
                                  "--out", str(tmp_path / "tables"), "--metrics", "psnr"])
    assert code == status and only_line(capsys) == "interrupted; run the same command to resume"


# ---- 5. A sampler without its measurement ----------------------------------------------------------------
@pytest.mark.parametrize("config", ["dps/ffhq_sr4", "dpps/ffhq_sr4", "diffpir/ffhq_sr4_noiseless_nfe20",
                                    "gdp/imagenet_sr4"])
@pytest.mark.parametrize("emptied", ["task=null", "task={}"])
def test_a_restoration_sampler_without_an_operator_is_refused_before_any_work(
        tmp_path: Path, tiny_checkpoint: Path, capsys, config: str, emptied: str) -> None:
    path = f"configs/{config}.yaml"
    code = sample_script.main(["--config", path, "--set", f"model.checkpoint={tiny_checkpoint}",
                               "--set", f"output={tmp_path / 'out'}", "--set", emptied])
    name = config.split("/")[0]
    assert code == 2 and only_line(capsys) == (
        f"error: {path}: sampler: {name} restores a measurement, so it needs task.operator (none is set); "
        f"only ddim and ddpm sample the prior without one")
    assert not (tmp_path / "out").exists()


def test_only_the_prior_samplers_need_no_operator() -> None:
    from samplers import build_sampler, list_samplers
    from samplers.base import prior_samplers

    assert prior_samplers() == ["ddim", "ddpm"]
    assert all(build_sampler(name).needs_operator is (name not in ("ddim", "ddpm"))
               for name in ("ddpm", "ddim", "dps", "dpps", "diffpir", "gdp"))
    assert set(prior_samplers()) < set(list_samplers())
