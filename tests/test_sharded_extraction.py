"""One store from several writers: torchrun ranks and --shard jobs, SIGKILL and resume with another N."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hskcache
import hskcache.storage.backends
from hskcache.store import group as store_mod
from hskcache.cli.main import main
from conftest import require_gpus
from helpers import arrays, assert_same_store
from tiny_task import CHUNK_BYTES, MAX_LEN, STORE_FLAGS, extract

TESTS = Path(__file__).resolve().parent
FLAGS = ["--batch-size", "32", "--quiet", *map(str, STORE_FLAGS)]


def torchrun(nproc: int, *args: str, gpus: bool = False, **env: str) -> subprocess.CompletedProcess:
    """Ranks on the CPU (they see no GPU, like the single-process store's extraction), or with `gpus` one GPU each."""
    path = os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), "-m", "hooked_cli", *args],
                          env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1",
                               **({} if gpus else {"CUDA_VISIBLE_DEVICES": ""}),
                               "TEST_CHUNK_BYTES": str(CHUNK_BYTES), **env},
                          capture_output=True, text=True, timeout=300)


class one_thread:
    """The teacher on one thread, like each torchrun rank, so forwards agree bit for bit."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


@pytest.fixture(scope="module")
def single(task, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("single") / "store"
    with one_thread():
        extract(task.teacher, task.train, out)
    return str(out)


def single_on(device: str, single: str, task, tmp_path: Path) -> str:
    """The single-process store on `device`: the module's (one CPU thread), else extracted there."""
    return single if device == "cpu" else str(extract(task.teacher, task.train, tmp_path / "one", "--device", device))


def test_two_ranks_write_the_single_process_store(task, single, tmp_path, device):
    """Two ranks (gloo on the CPU; nccl and a GPU each on CUDA) write the store one process writes on that device."""
    require_gpus(device, 2)
    single = single_on(device, single, task, tmp_path)
    out = tmp_path / "two"
    done = torchrun(2, "extract", "--teacher", str(task.teacher), "--data", str(task.train), "--store", str(out),
                    *FLAGS, "--device", device, gpus=device == "cuda")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote") == 1
    assert arrays(single)["commits"].size >= 4  # several chunks, so both ranks write some
    assert_same_store(str(out), single)


def test_sigkilled_rank_resumes_with_another_count_keeping_finished_chunks(task, single, tmp_path, device):
    require_gpus(device, 2)
    single = single_on(device, single, task, tmp_path)
    out = tmp_path / "killed"
    done = torchrun(2, "extract", "--teacher", str(task.teacher), "--data", str(task.train), "--store", str(out),
                    *FLAGS, "--device", device, gpus=device == "cuda", TEST_KILL_RANK="1", TEST_KILL_AFTER="2")
    assert done.returncode != 0
    partial = store_mod.describe(str(out))
    assert not partial["complete"] and 0 < partial["rows_committed"] < partial["num_examples"]
    committed = store_mod.committed_chunks(hskcache.storage.backends.Location.parse(str(out)))
    assert len(committed) >= 2
    kept = {p: p.stat().st_mtime_ns for p in (out / "values" / "c").iterdir() if int(p.name) in committed}
    with one_thread():
        extract(task.teacher, task.train, out, "--device", device)  # one process finishes what two started
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished chunks were not rewritten
    assert_same_store(str(out), single)


def test_shards_without_torchrun_complete_in_any_order(task, single, tmp_path, capsys, device):
    single = single_on(device, single, task, tmp_path)
    out = tmp_path / "shards"
    with one_thread():
        extract(task.teacher, task.train, out, "--shard", "2/3", "--device", device)
        assert "complete once every shard is" in capsys.readouterr().out
        with pytest.raises(hskcache.errors.UserError, match="incomplete"):
            hskcache.open_store(out)
        extract(task.teacher, task.train, out, "--shard", "0/3", "--device", device)
        extract(task.teacher, task.train, out, "--shard", "1/3", "--device", device)
    assert "wrote" in capsys.readouterr().out
    assert_same_store(str(out), single)


@pytest.mark.parametrize("shard, message", [("3/3", "0 <= i < N"), ("1-3", "is not i/N")])
def test_bad_shards_are_refused(task, tmp_path, capsys, shard, message):
    args = ["extract", "--teacher", str(task.teacher), "--data", str(task.train), "--store", str(tmp_path / "s"),
            "--max-length", str(MAX_LEN), "--student-layers", "2", "--shard", shard]
    assert main(args) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "s").exists()
    assert main(args[:-2] + ["--shard", "0/2", "--overwrite"]) == 2
    assert "--overwrite with --shard" in capsys.readouterr().err
