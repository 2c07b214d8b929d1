"""`students train` faults: a diverging rate, a corrupt or unreadable checkpoint, a full disk and the
run folder spelled another way. Each is one line and exit 2, and leaves the last checkpoint resumable."""
from __future__ import annotations

import errno
import json
import math
import os

import pytest
import torch

import hskcache
from students import cli
from students.training import checkpoint, trainer
from students.training.checkpoint import read_state
from tiny_task import Interrupting
from students.training.sources import SourceSettings

QUICK = ("--hsk-epochs", "1", "--pred-epochs", "1", "--hsk-batch-size", "16", "--pred-batch-size", "16",
         "--hsk-lr", "3e-3", "--pred-lr", "3e-3", "--threads", "1", "--quiet", "--select-on", "last",
         "--log-every", "1")


@pytest.fixture(scope="module")
def student(task, tmp_path_factory):
    out = tmp_path_factory.mktemp("students") / "tiny"
    assert cli.main(["build", "tinybert", "--init", "random", "--teacher", str(task.teacher), "--layers", "2",
                     "--hidden", "16", "--ffn", "32", "--heads", "2", "--out", str(out)]) == 0
    return out


def train_args(task, student, out, device, *extra) -> list[str]:
    return ["train", "--store", str(task.store), "--student", str(student), "--out", str(out), "--device", device,
            *QUICK, *extra]


def strict_json_lines(path) -> list[dict]:
    """log.jsonl as strict JSON: a bare NaN or Infinity fails the test."""
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}, which is not JSON")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("students: error: "), err
    return err[0]


def interrupted_run(task, student, out, device, monkeypatch) -> list[str]:
    """A run stopped by Ctrl-C at its third step (checkpoint saved); returns its arguments."""
    store = hskcache.open_store(task.store)
    args = train_args(task, student, out, device, "--max-steps", "6")
    with monkeypatch.context() as patch:
        patch.setattr(SourceSettings, "open", lambda self, cfg: Interrupting(store, 3))
        assert cli.main(args) == 130
    return args


def test_diverging_rate_stops_at_the_first_non_finite_step(task, student, tmp_path, capsys, device):
    run = tmp_path / "run"
    args = train_args(task, student, run, device, "--hsk-lr", "1e12", "--max-steps", "16", "--save-every", "1")
    assert cli.main(args) == 2
    line = one_error_line(capsys)
    assert "not finite" in line and "--hsk-lr 1e+12 is likely too high" in line and "lower rate" in line
    failed = int(line.split("stage hsk, step ")[1].split(":")[0])
    # The step records before it (one per step) are finite; nothing of the failed step was saved.
    records = strict_json_lines(run / "log.jsonl")
    assert [r["step"] for r in records] == list(range(1, failed))
    assert all(math.isfinite(r["loss"]) for r in records)
    state = read_state(run / "checkpoint")
    assert state["position"]["step"] == failed - 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert not (run / "student").exists() and not (run / "metrics.json").exists()
    # The checkpoint resumes: the same run diverges again at the same step.
    assert cli.main(args + ["--resume"]) == 2
    assert one_error_line(capsys) == line
    assert [r["step"] for r in strict_json_lines(run / "log.jsonl")] == list(range(1, failed))


def test_a_checkpoint_with_nan_weights_is_refused_before_anything_is_written(task, student, tmp_path,
                                                                              monkeypatch, capsys, device):
    run = tmp_path / "run"
    args = interrupted_run(task, student, run, device, monkeypatch)
    state_file = run / "checkpoint" / checkpoint.STATE_FILE
    state = torch.load(state_file, weights_only=False)
    name = next(iter(state["model"]))
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    torch.save(state, state_file)
    before = {path: path.read_bytes() for path in (state_file, run / "log.jsonl")}
    capsys.readouterr()
    assert cli.main(args + ["--resume"]) == 2
    line = one_error_line(capsys)
    assert "non-finite weights" in line and name in line and "remove it" in line
    assert {path: path.read_bytes() for path in before} == before
    assert not (run / "student").exists()


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_an_unreadable_checkpoint_is_one_line_and_the_advice_works(task, student, tmp_path, monkeypatch, capsys,
                                                                   damage, device):
    run = tmp_path / "run"
    args = interrupted_run(task, student, run, device, monkeypatch)
    state_file = run / "checkpoint" / checkpoint.STATE_FILE
    data = state_file.read_bytes()
    state_file.write_bytes(data[:len(data) // 2] if damage == "truncated" else b"")
    capsys.readouterr()
    assert cli.main(args + ["--resume"]) == 2
    line = one_error_line(capsys)
    assert str(state_file) in line and f"remove {run / 'checkpoint'}" in line and "without --resume" in line
    # Following it: the checkpoint removed, --resume starts the run over.
    (run / "checkpoint").rename(tmp_path / "aside")
    assert cli.main(args + ["--resume"]) == 0
    assert (run / "student").is_dir()


def test_resume_knows_the_run_folder_however_spelled_and_names_only_what_changed(task, student, tmp_path,
                                                                                  monkeypatch, capsys, device):
    monkeypatch.chdir(tmp_path)
    args = interrupted_run(task, student, "run", device, monkeypatch)
    capsys.readouterr()
    changed = [a if a != "6" else "5" for a in args]  # --max-steps 5
    assert cli.main(changed + ["--resume"]) == 2
    assert "with other settings (max_steps);" in one_error_line(capsys)
    spelled = [a if a != "run" else str(tmp_path / "run") + "/" for a in args]
    assert cli.main(spelled + ["--resume"]) == 0
    steps = [r["step"] for r in strict_json_lines(tmp_path / "run" / "log.jsonl") if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6] * 2  # resumed, not restarted: each step logged once per stage


class FullDisk:
    """Raises ENOSPC from the `after`+1-th call of `fn` on."""

    def __init__(self, fn, after: int) -> None:
        self.fn, self.left = fn, after

    def __call__(self, *args, **kwargs):
        if self.left == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.left -= 1
        return self.fn(*args, **kwargs)


class FullLog:
    """`open` for the trainer whose log file refuses writes after `after` of them."""

    def __init__(self, after: int) -> None:
        self.after = after

    def __call__(self, path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        if str(path).endswith(trainer.LOG_FILE):
            f.write = FullDisk(f.write, self.after)
        return f


@pytest.mark.parametrize("where", ["checkpoint", "student", "log"])
def test_a_full_disk_is_one_line_and_the_run_resumes(task, student, tmp_path, monkeypatch, capsys, where, device):
    """The second checkpoint, the selected student (RUN/best) or the third log record meets a full disk."""
    run = tmp_path / "run"
    args = train_args(task, student, run, device, "--max-steps", "4", "--save-every", "2")
    with monkeypatch.context() as patch:
        if where == "checkpoint":
            patch.setattr(checkpoint.torch, "save", FullDisk(torch.save, 1))
        elif where == "student":
            patch.setattr(trainer, "save_student", FullDisk(trainer.save_student, 0))
        else:
            patch.setattr(trainer, "open", FullLog(2), raising=False)
        assert cli.main(args) == 2
    line = one_error_line(capsys)
    assert "no space left on the device" in line and f"{run / 'checkpoint'}, is intact" in line
    assert "rerun with --resume" in line
    size = (run / "checkpoint" / checkpoint.STATE_FILE).stat().st_size / 2**20
    assert f"free space (a checkpoint takes {size:.1f} MiB, written beside the last one)" in line
    position = read_state(run / "checkpoint")["position"]
    assert (position["stage"], position["step"]) == {"checkpoint": (0, 2), "student": (1, 4), "log": (0, 2)}[where]
    assert not list(run.glob("*.tmp")) and not (run / "student").exists()
    assert cli.main(args + ["--resume"]) == 0
    steps = [(r["stage"], r["step"]) for r in strict_json_lines(run / "log.jsonl") if "loss" in r]
    assert steps == [(stage, step) for stage in ("hsk", "pred") for step in (1, 2, 3, 4)]
    assert (run / "student").is_dir()


def test_a_cut_build_or_metrics_write_leaves_nothing_that_looks_finished(task, tmp_path, monkeypatch):
    """A build cut after the config is written (before the weights) leaves no student folder, so a script's
    `[ -f OUT/config.json ]` does not take it for a built one; a cut metrics.json write keeps the old file whole."""
    from transformers import PreTrainedModel

    from hskcache.outputs import write_text_whole
    from students.models.student import build_tinybert

    def config_then_cut(self, out, *args, **kwargs):
        self.config.save_pretrained(out)
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "student"
    with monkeypatch.context() as patch:
        patch.setattr(PreTrainedModel, "save_pretrained", config_then_cut)
        with pytest.raises(OSError):
            build_tinybert(task.teacher, 2, 16, 32, 2, out)
    assert not out.exists() and not list(tmp_path.iterdir())
    build_tinybert(task.teacher, 2, 16, 32, 2, out)
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "student.json"}

    metrics = tmp_path / "metrics.json"
    write_text_whole(metrics, '{"old": 1}\n')
    real_write = type(metrics).write_text

    def half_then_cut(self, text, *args, **kwargs):
        real_write(self, text[: len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")
    with monkeypatch.context() as patch:
        patch.setattr(type(metrics), "write_text", half_then_cut)
        with pytest.raises(OSError):
            write_text_whole(metrics, '{"new": 2}\n')
    assert json.loads(metrics.read_text()) == {"old": 1} and [p.name for p in tmp_path.glob("metrics*")] == [metrics.name]
