"""Write tiny stores at four settings with `hskcache extract` and print every chunk file's sha256.

A refactor that must not change the store format is checked by running this at the commit before
and after it (`git archive` each into a folder, `PYTHONPATH=FOLDER python tools/chunk_hashes.py WORK`)
and diffing the two outputs: the chunk bytes (every `c/...` file) and the arrays' `zarr.json` must
be identical; only the group's attributes may differ. The teacher is the tests' tiny random BERT
(`tests/conftest.make_teacher`, seeded), so both runs extract the same numbers on one machine.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_teacher, write_csv  # noqa: E402


RUNS = {  # store name -> extract flags beyond the shared ones
    "mag": [],
    "magint8rank": ["--width", "0.5", "--values", "int8", "--width-code", "rank", "--depth", "2", "--tokens", "6"],
    "rand": ["--width", "0.25", "--width-strategy", "rand", "--width-seed", "3"],
    "att": ["--knowledge", "hsk,att,val", "--att-rows", "4", "--att-keys", "3", "--width", "0.5"],
}


def main(work: Path) -> None:
    torch.set_num_threads(1)
    work.mkdir(parents=True, exist_ok=True)
    teacher = make_teacher(work / "teacher", layers=3)
    rows = [{"sentence": f"word{i % 7} good film {'bad ' * (i % 3)}scene{i}", "label": i % 2} for i in range(40)]
    data = write_csv(work / "d.csv", rows)
    for name, extra in RUNS.items():
        # `python -m hskcache`: the same entry point before and after the CLI became a package
        subprocess.run([sys.executable, "-m", "hskcache", "extract", "--teacher", str(teacher), "--data", str(data),
                        "--store", str(work / name), "--student-layers", "2", "--max-length", "16", "--batch-size", "8",
                        *extra], check=True)
        for f in sorted((work / name).rglob("*")):
            if f.is_file() and f.relative_to(work / name) != Path("zarr.json"):
                print(name, f.relative_to(work / name), hashlib.sha256(f.read_bytes()).hexdigest()[:16])


if __name__ == "__main__":
    main(Path(sys.argv[1]))
