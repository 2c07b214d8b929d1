"""tools/gpu_check.sh on a machine without CUDA: it says so, shows the CUDA cases skipped and exits 0."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: run tools/gpu_check.sh itself")
def test_gpu_check_skips_cleanly_without_cuda():
    done = subprocess.run(["bash", "tools/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "no CUDA device" in lines[0] and "Traceback" not in done.stderr
    [tests] = [line for line in lines if line.startswith("CUDA test cases")]
    skipped = re.search(r"0 passed, 0 failed, (\d+) skipped \(no CUDA device\)", tests)
    assert skipped and int(skipped.group(1)) >= 10  # the device-parametrized tests' cuda cases, collected
    [bench] = [line for line in lines if line.startswith("GPU benchmarks")]
    assert bench.endswith("not run: no CUDA device")
