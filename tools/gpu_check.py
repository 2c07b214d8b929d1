"""The GPU check: every CUDA case of the test suite, then the GPU benchmarks, printed as one table.

    bash tools/gpu_check.sh [--examples 2048] [--steps 200] [--tests-timeout 300]

The benchmarks time the project's own code paths on the device: `hskcache extract` with the
packaged MiniLM teacher over real movie reviews (selection and bit packing on the GPU; bf16
autocast against fp32), the reader feeding the device (packed batches expanded on the GPU, from
pinned against pageable memory), `students train` steps of a TinyBERT-3s (bf16 against fp32, and
the online teacher against the store), and two-rank nccl DDP training where there are two GPUs.
Sized to finish in under 8 minutes on one H100. Without a CUDA device it says so, shows the CUDA
cases collected and skipped, and exits 0. `--device cpu` runs the benchmarks on the CPU (a check
of this script, not a GPU number).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable
from xml.etree import ElementTree

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools" / "bench"))
Row = tuple[str, str, str]  # check, setting, result


def cuda_tests(timeout: int) -> tuple[list[Row], bool]:
    """`pytest -m cuda` over the suite: one row of counts, one per failure; and whether all passed."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "cuda.xml"
        start = time.perf_counter()
        try:
            command = [sys.executable, "-m", "pytest", "tests", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                       f"--junitxml={report}"]
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return [("CUDA test cases", "pytest -m cuda", f"timed out after {timeout} s")], False
        seconds = time.perf_counter() - start
        if not report.exists():
            return [("CUDA test cases", "pytest -m cuda", f"pytest exited {done.returncode} without a report: "
                     + (done.stderr or done.stdout).strip().splitlines()[-1:][0])], False
        suite = ElementTree.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        failed = counts["failures"] + counts["errors"]
        passed = counts["tests"] - failed - counts["skipped"]
        reason = " (no CUDA device)" if not torch.cuda.is_available() else ""
        rows = [("CUDA test cases", "pytest -m cuda", f"{passed} passed, {failed} failed, {counts['skipped']} skipped"
                 f"{reason}, {seconds:.0f} s")]
        for case in suite.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                rows.append(("  failed", f"{case.get('classname')}::{case.get('name')}", "see pytest -m cuda"))
    return rows, failed == 0 and counts["tests"] > 0


def extraction(teacher: Path, data: Path, store: Path, examples: int, device: str, dtype: str,
               hsk: tuple[int, int, float]) -> float:
    """Rows/s of a whole `hskcache extract` (teacher load included) on `device`."""
    from hskcache.teacher.config import build_config
    from hskcache.teacher.extract import extract

    depth, tokens, width = hsk
    cfg = build_config(dict(teacher=str(teacher), data=str(data), store=str(store), student_layers=3, depth=depth,
                            tokens=tokens, width=width, max_length=128, batch_size=128, device=device, dtype=dtype,
                            overwrite=True))
    start = time.perf_counter()
    extract(cfg, progress=False)
    return examples / (time.perf_counter() - start)


def reader_to_device(store: Path, device: str, pinned: bool, seconds: float = 3.0) -> float:
    """Rows/s of packed batches read and expanded on `device` (whole epochs, at least `seconds`)."""
    import hskcache
    from hskcache.storage.packed import expand

    source, on = hskcache.open_store(store), torch.device(device)
    rows, start, epoch = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        for batch in source.batches(64, shuffle=True, seed=0, epoch=epoch, packed=True, pin_memory=pinned):
            rows += len(expand(batch, on, non_blocking=pinned)["input_ids"])
        epoch += 1
    if on.type == "cuda":
        torch.cuda.synchronize()
    return rows / (time.perf_counter() - start)


def train_rate(source: list[str], student: Path, out: Path, device: str, dtype: str, steps: int,
               nproc: int = 1) -> tuple[float, float]:
    """(ms per step, rows/s) of the HSK stage of `students train` (in one process, or under torchrun)."""
    flags = ["train", *source, "--student", str(student), "--out", str(out), "--hsk", "1,9,0.1", "--hsk-epochs", "100",
             "--pred-epochs", "1", "--max-steps", str(steps), "--hsk-batch-size", "32", "--pred-batch-size", "32",
             "--select-on", "last", "--device", device, "--dtype", dtype, "--quiet"]
    if nproc == 1:
        from students import cli

        with contextlib.redirect_stdout(io.StringIO()):  # the table is the only output
            assert cli.main(flags) == 0, f"students {' '.join(flags)} failed"
    else:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                        "-m", "students.cli", *flags], check=True, env=env, capture_output=True, text=True)
    stats = json.loads((out / "metrics.json").read_text())["stages"]["hsk"]
    return 1000 * stats["seconds"] / stats["steps"], stats["examples_per_second"]


class Table:
    """The rows so far; a benchmark that fails becomes its row's result, so the table is still printed."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows, self.ok = rows, True

    def add(self, check: str, setting: str, measure: Callable[[], tuple[str, Any]]) -> Any:
        """Run `measure` (-> result text, value); the value, or None when it failed."""
        try:
            text, value = measure()
        except Exception as exc:  # reported in the table, with the rest of the check still run
            detail = getattr(exc, "stderr", None) or str(exc)
            last = detail.strip().splitlines()[-1] if detail and detail.strip() else ""
            text, value, self.ok = f"failed: {type(exc).__name__}: {last[:100]}", None, False
        self.rows.append((check, setting, text))
        return value


def benchmarks(table: Table, device: str, examples: int, steps: int) -> None:
    from common import movie_csv, packaged_teacher
    from hskcache.options import quiet_libraries
    from students import cli

    quiet_libraries()
    with tempfile.TemporaryDirectory(prefix="hsk-gpu-") as tmp:
        work = Path(tmp)
        teacher, data = packaged_teacher(work / "teacher"), movie_csv(work / "movies.csv", examples)
        source = f"MiniLM-L6 teacher, {examples} reviews, length 128"
        def extracted(name: str, dtype: str, hsk: tuple[int, int, float]) -> Callable[[], tuple[str, None]]:
            return lambda: (f"{extraction(teacher, data, work / name, examples, device, dtype, hsk):,.0f} rows/s", None)

        table.add("extract, warm-up", f"{source}, (1,9,0.1), fp32, start-up included",
                  extracted("warm", "fp32", (1, 9, 0.1)))
        for hsk in ((1, 9, 0.1), (4, 50, 0.2)):
            name = ",".join(map(str, hsk))
            for dtype in ("fp32", "bf16"):  # the bf16 stores are the ones read and trained on below
                table.add("extract (selection on device)", f"{source}, ({name}), {dtype}", extracted(name, dtype, hsk))
        for pinned in ((True, False) if device == "cuda" else (False,)):
            table.add("reader -> device", f"(4,50,0.2) packed, batch 64, {'pinned' if pinned else 'pageable'}",
                      lambda pinned=pinned: (f"{reader_to_device(work / '4,50,0.2', device, pinned):,.0f} rows/s",
                                             None))
        student = work / "student"
        with contextlib.redirect_stdout(io.StringIO()):
            built = cli.main(["build", "tinybert", "--init", "random", "--teacher", str(teacher), "--preset",
                              "tinybert-3s", "--out", str(student), "--device", device]) == 0
        if not built:
            table.rows.append(("students build", "tinybert-3s", "failed"))
            table.ok = False
            return
        store = ["--store", str(work / "1,9,0.1")]
        setting = f"TinyBERT-3s, HSK (1,9,0.1), batch 32, {steps} steps"

        def timed(source: list[str], out: str, dtype: str, nproc: int = 1, against: tuple | None = None):
            def measure() -> tuple[str, tuple[float, float]]:
                ms, rate = train_rate(source, student, work / out, device, dtype, steps, nproc)
                ratio = "" if against is None else (f" ({ms / against[0]:.2f}x the store's ms/step)" if nproc == 1
                                                     else f" ({rate / against[1]:.2f}x one GPU's rows/s)")
                return f"{ms:.1f} ms/step, {rate:,.0f} rows/s{ratio}", (ms, rate)
            return measure

        one = {dtype: table.add("train step (store)", f"{setting}, {dtype}", timed(store, f"run-{dtype}", dtype))
               for dtype in ("fp32", "bf16")}
        online = ["--teacher", str(teacher), "--data", str(data), "--student-layers", "3", "--depth", "1",
                  "--tokens", "9", "--width", "0.1", "--max-length", "128"]
        table.add("train step (online teacher)", f"{setting}, bf16", timed(online, "run-online", "bf16",
                                                                            against=one["bf16"]))
        gpus = torch.cuda.device_count() if device == "cuda" else 0
        if gpus >= 2:
            table.add("DDP, nccl, 2 ranks", f"{setting} (global), bf16", timed(store, "run-ddp", "bf16", nproc=2,
                                                                              against=one["bf16"]))
        else:
            table.rows.append(("DDP, nccl, 2 ranks", "needs 2 GPUs", f"not run: {gpus} GPU(s)"))


def print_table(title: str, rows: list[Row]) -> None:
    widths = [max(len(r[i]) for r in [("check", "setting", "result"), *rows]) for i in range(3)]
    print(title)
    for row in [("check", "setting", "result"), tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=2048, help="movie reviews extracted (default 2048)")
    p.add_argument("--steps", type=int, default=200, help="training steps per timed run (default 200)")
    p.add_argument("--tests-timeout", type=int, default=300, help="seconds allowed for the CUDA test cases")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                   help="where the benchmarks run (cpu: a check of this script, not a GPU number)")
    p.add_argument("--no-tests", action="store_true", help="the benchmarks only")
    args = p.parse_args()
    start = time.perf_counter()
    cuda = torch.cuda.is_available()
    where = (f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if cuda else "no CUDA device")
    rows, ok = ([], True) if args.no_tests else cuda_tests(args.tests_timeout)
    if args.device == "cuda" and not cuda:
        rows.append(("GPU benchmarks", "tools/gpu_check.py", "not run: no CUDA device"))
        print_table(f"GPU check on {platform.machine()}: no CUDA device, so the CUDA cases were collected and "
                    f"skipped and the GPU benchmarks not run (torch {torch.__version__})", rows)
        return 0
    table = Table(rows)
    benchmarks(table, args.device, args.examples, args.steps)
    print_table(f"GPU check on {platform.machine()}, {where}, benchmarks on {args.device}, torch {torch.__version__}, "
                f"{time.perf_counter() - start:.0f} s in all", table.rows)
    return 0 if ok and table.ok else 1


if __name__ == "__main__":
    sys.exit(main())
