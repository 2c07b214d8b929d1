"""DDP training under torchrun on 2 CPU ranks: the same run as one process, resumable across rank counts."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hskcache
from hskcache.distributed import Ranks, backend_for, rank_device
from hskcache.errors import UserError
from hskcache.kinds.hsk import HSKRead
from hskcache.store.reader import epoch_batches
from students.models.student import build_tinybert
from students.training.trainer import TrainConfig, train

from conftest import require_gpus
from helpers import quiet_runtime, torchrun
from tiny_task import Interrupting

SETTINGS = dict(reads={"hsk": HSKRead((2, 6, 0.25))}, hsk_epochs=1, pred_epochs=1, hsk_lr=3e-3, pred_lr=3e-3, hsk_batch_size=16,
                pred_batch_size=16, log_every=1, select_on="last")
FLAGS = ["--hsk", "2,6,0.25", "--hsk-epochs", "1", "--pred-epochs", "1", "--hsk-lr", "3e-3", "--pred-lr", "3e-3",
         "--hsk-batch-size", "16", "--pred-batch-size", "16", "--log-every", "1", "--threads", "1", "--quiet", "--select-on", "last"]


@pytest.fixture(scope="module")
def student(task, tmp_path_factory):
    """Dropout off: the ranks draw other dropout masks than one process would."""
    out = tmp_path_factory.mktemp("students") / "nodrop"
    build_tinybert(task.teacher, layers=2, hidden=16, ffn=32, heads=2, out_dir=out)
    config = json.loads((out / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def one_process(task, student, tmp_path_factory):
    cfg = TrainConfig(student=str(student), out=str(tmp_path_factory.mktemp("runs") / "one"),
                      runtime=quiet_runtime(), **SETTINGS)
    train(cfg, hskcache.open_store(task.store))
    return cfg


def records(run) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "log.jsonl").read_text().splitlines()]


def assert_same_run(run, reference) -> None:
    got, want = records(run), records(reference)
    assert [(r["stage"], r["step"], r["lr"]) for r in got] == [(r["stage"], r["step"], r["lr"]) for r in want]
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], rel=1e-4, abs=1e-6)
    a, b = (load_file(Path(r) / "student" / "model.safetensors") for r in (run, reference))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def on_device(device: str) -> list[str]:
    """Ranks on `device` (nccl and one GPU each on CUDA) in fp32, as the one-process reference on the CPU."""
    require_gpus(device, 2)
    return ["--device", device, "--dtype", "fp32"]


def test_two_ranks_train_the_one_process_run(task, student, one_process, tmp_path, device):
    run = tmp_path / "two"
    done = torchrun(2, "students.cli", "train", "--store", str(task.store), "--student", str(student),
                    "--out", str(run), *FLAGS, *on_device(device))
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(run, one_process.out)
    assert done.stdout.count("wrote") == 1  # rank 0 alone reports (and writes)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stages"]["hsk"]["examples"] == metrics["stages"]["pred"]["examples"] == task_rows(task)


def test_resume_on_more_ranks(task, student, one_process, tmp_path, device):
    """Interrupted in one process mid-stage 1 (on the CPU), finished by 2 ranks: the uninterrupted run."""
    flags = on_device(device)
    cut = replace(one_process, out=str(tmp_path / "cut"))
    with pytest.raises(KeyboardInterrupt):
        train(cut, Interrupting(hskcache.open_store(task.store), 9))
    done = torchrun(2, "students.cli", "train", "--store", str(task.store), "--student", str(student),
                    "--out", cut.out, "--resume", *FLAGS, *flags)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(cut.out, one_process.out)


def task_rows(task) -> int:
    return hskcache.open_store(task.store).num_examples


def test_rank_shares_partition_every_batch():
    """The ranks' shares of batch i are disjoint, cover batch i, and come from disjoint chunks."""
    args = (1000, 37, 4, 48, True, 3, 7)
    whole = [b for batches in epoch_batches(*args) for b in batches]
    shares = [[b for batches in epoch_batches(*args, rank=r, world_size=3) for b in batches] for r in range(3)]
    chunks = [set() for _ in range(3)]
    for i, batch in enumerate(whole):
        parts = [s[i] for s in shares]
        assert sorted(torch.cat([torch.from_numpy(p) for p in parts]).tolist()) == sorted(batch.tolist())
        for r, part in enumerate(parts):
            chunks[r] |= set((part // 37).tolist())
    assert not (chunks[0] & chunks[1] or chunks[0] & chunks[2] or chunks[1] & chunks[2])
    resumed = [b for batches in epoch_batches(*args, start_batch=5, rank=1, world_size=3) for b in batches]
    assert [b.tolist() for b in resumed] == [b.tolist() for b in shares[1][5:]]


def test_rank_devices_and_backends():
    """The CUDA paths, decided without a GPU: each rank of a node owns cuda:LOCAL_RANK over nccl."""
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}
    assert Ranks.from_env(env) == Ranks(5, 8, 1) and not Ranks.from_env(env).is_main
    assert Ranks.from_env({}) == Ranks(0, 1, 0)
    with pytest.raises(UserError, match="RANK 8 / WORLD_SIZE 8"):
        Ranks.from_env({"RANK": "8", "WORLD_SIZE": "8"})
    assert rank_device("cpu", 3) == torch.device("cpu") and backend_for(torch.device("cpu")) == "gloo"
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            rank_device("cuda", 0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.cuda, "is_available", lambda: True)
        assert rank_device("auto", 3, cuda_devices=8) == torch.device("cuda", 3)
        assert backend_for(rank_device("cuda", 7, cuda_devices=8)) == "nccl"
        with pytest.raises(UserError, match="local rank 2 has no GPU"):
            rank_device("cuda", 2, cuda_devices=2)
