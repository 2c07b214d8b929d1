"""`hskcache budget`: Table 3 reproduction, plan = real store bytes, config sets, bad input."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zarr

from hskcache.budget import plan as budget
from hskcache.cli.budget import run_budget
from hskcache.cli.main import build_parser
from hskcache.errors import UserError
from hskcache.options import settings_from
from hskcache.storage.layout import CHECKSUM_BYTES
from hskcache.store.shape import StoreShape
from hskcache.store.meta import synthetic_meta
from hskcache.store.group import COMMITS, FORMAT, SCHEMA_VERSION, compressors
from helpers import store_shape

MNLI = budget.Setting(examples=392702, seq_len=128, student_layers=6, hidden=768)
PLAN = ["budget", "--plan", "--examples", "392702", "--seq-len", "128", "--student-layers", "6",
        "--teacher-width", "768"]
GIB = 2**30


def settings(argv: list[str]):
    args = build_parser().parse_args(argv)
    return settings_from(args.command_.settings, args, "hskcache budget")


def run(argv: list[str], capsys) -> str:
    assert run_budget(settings(argv)) == 0
    return capsys.readouterr().out


def fails(argv: list[str]) -> str:
    with pytest.raises(UserError) as exc:
        run_budget(settings(argv))
    message = str(exc.value)
    assert message and "\n" not in message
    return message


# --- Table 3 -----------------------------------------------------------------

# (config, features GiB, mask GiB) as printed in the paper's Table 3.
TABLE3 = [("1,9,0.1", 1.0, 2.5), ("5,2,0.3", 3.4, 2.8), ("3,8,0.2", 5.4, 6.8), ("full", 1011, 0)]


def test_table3_reproduced_within_2_percent(capsys):
    rows = json.loads(run(PLAN + ["--json", "--configs", *[c for c, _, _ in TABLE3]], capsys))
    assert [r["config"] for r in rows] == ["1,9,0.1", "5,2,0.3", "3,8,0.2", "full"]
    for row, (_, features, mask) in zip(rows, TABLE3):
        assert row["paper_values_bytes"] / GIB == pytest.approx(features, rel=0.02)
        assert row["paper_mask_bytes"] / GIB == pytest.approx(mask, rel=0.02, abs=0)


def test_compact_layout_is_5x_smaller_at_1_9_01():
    row = budget.report(budget.Config.of(1, 9, 0.1), replace(MNLI, width_code="rank"))
    assert row.width_encoding == "rank"
    assert row.ratio >= 5
    assert row.paper_total_bytes >= 5 * (row.hskcache_values_bytes + row.hskcache_mask_bytes)
    assert row.hskcache_total_bytes > row.hskcache_values_bytes + row.hskcache_mask_bytes  # + inputs, logits
    # a token: 77 fp16 values + 45 bytes of rank code + an int16 position, against 77 fp32 + 768 mask bytes
    assert row.ratio == pytest.approx((77 * 4 + 768) / (77 * 2 + 45 + 2), rel=0.01)  # edge chunk padding


def test_int8_bitmask_sizes_and_disk_estimate():
    row = budget.report(budget.Config.of(1, 9, 0.1), replace(MNLI, values="int8"))
    assert row.width_encoding == "bitmask"
    # 77 int8 values + an fp16 scale, 96 bytes of bitmask + an int16 position
    assert row.ratio == pytest.approx((77 * 4 + 768) / (77 + 2 + 96 + 2), rel=0.02)  # edge chunk padding
    shape = replace(MNLI, values="int8").store_shape(budget.Config.of(1, 9, 0.1))
    raw = shape.bytes_by_array(MNLI.examples)
    measured = {"values": 1.25, "value_scale": 1.25, "width_code": 2.05, "positions": 2.45, "input_ids": 2.93,
                "length": 2.14, "token_type_ids": 7384.62, "labels": 29.06, "example_id": 6.72, "logits": 1.08}
    expected = {name: round(n / measured[name]) for name, n in raw.items()}  # docs/benchmarks.md's int8 ratios
    assert (row.disk_values_bytes, row.disk_mask_bytes) == (
        expected["values"] + expected["value_scale"], expected["width_code"] + expected["positions"])
    assert row.disk_total_bytes == sum(expected.values())
    plain = budget.report(budget.Config.of(1, 9, 0.1), replace(MNLI, values="int8", compress="none"))
    assert plain.disk_total_bytes == plain.hskcache_total_bytes


def test_full_amount_and_fraction():
    full = budget.report(budget.full_config(6, 128), MNLI)
    assert (full.n_d, full.n_l, full.n_w, full.a_hsk, full.fraction) == (7, 128, 1.0, 896, 1.0)
    assert full.paper_mask_bytes == 0 and full.width_encoding == "none"
    assert budget.report(budget.Config.of(1, 9, 0.1), MNLI).fraction == pytest.approx(0.9 / 896)


def test_short_examples_cost_less_in_the_paper_layout_only():
    counts = [0] * 129
    counts[5], counts[128] = 300, 100  # 300 examples of 5 tokens, 100 full
    short = budget.Setting(examples=400, seq_len=128, student_layers=6, hidden=768, length_counts=tuple(counts))
    padded = budget.Setting(examples=400, seq_len=128, student_layers=6, hidden=768)
    config = budget.Config.of(2, 9, 0.1)
    a, b = budget.report(config, short), budget.report(config, padded)
    assert short.tokens_kept(9) == 300 * 5 + 100 * 9
    assert a.paper_values_bytes == 2 * (300 * 5 + 100 * 9) * 77 * 4
    assert a.hskcache_total_bytes == b.hskcache_total_bytes


# --- plan == a real store ----------------------------------------------------

def write_store(path: Path, shape: StoreShape, examples: int, student_layers: int) -> None:
    """A store laid out like the writer's, made with zarr directly (uncompressed, whole chunks)."""
    group = zarr.open_group(str(path), mode="w")
    rows = shape.rows_per_chunk()
    for spec in shape.arrays():
        array = zarr.create_array(store=str(path), name=spec.name, shape=(examples, *spec.row_shape),
                                  chunks=(rows, *spec.row_shape), dtype=spec.dtype, compressors=compressors("none"),
                                  config={"write_empty_chunks": True})
        array[:] = np.arange(examples) % shape.seq_len + 1 if spec.name == "length" else 0
    commits = zarr.create_array(store=str(path), name=COMMITS, shape=(-(-examples // rows),), chunks=(1,),
                                dtype=np.uint8, compressors=compressors("none"))
    commits[:] = 1  # every chunk committed
    if shape.static_bytes():
        zarr.create_array(store=str(path), name="static_dims", data=np.arange(shape.kinds["hsk"].kept, dtype=np.int32),
                          compressors=compressors("none"))
    meta = synthetic_meta(shape, examples, range(student_layers + 1), "test")
    group.attrs.update(meta.to_attrs() | {"format": FORMAT, "schema_version": SCHEMA_VERSION,
                                          "rows_committed": examples, "complete": True})


@pytest.mark.parametrize("width, strategy", [(0.1, "mag"), (0.5, "rand"), (1.0, "mag")])
def test_plan_bytes_equal_a_real_store(tmp_path, capsys, width, strategy):
    shape = store_shape(seq_len=32, vocab_size=30522, num_logits=3, regression=False, depth=3, tokens=16,
                        hidden=768, width=width, width_strategy=strategy, compress="none")
    examples = 2 * shape.rows_per_chunk() + 3  # a padded edge chunk
    write_store(tmp_path / "s", shape, examples, student_layers=4)
    config = f"3,16,{width}"
    plan = ["budget", "--plan", "--examples", str(examples), "--seq-len", "32", "--student-layers", "4",
            "--teacher-width", "768", "--width-strategy", strategy, "--compress", "none", "--json", "--configs", config]
    planned = json.loads(run(plan, capsys))[0]
    measured = json.loads(run(["budget", "--store", str(tmp_path / "s"), "--json"], capsys))[0]
    assert measured["config"] == planned["config"] == config
    disk = measured["disk_bytes"]
    expected = shape.bytes_by_array(examples)
    assert set(disk) == set(expected)
    for name, nbytes in expected.items():
        metadata = (tmp_path / "s" / name / "zarr.json").stat().st_size
        checksums = CHECKSUM_BYTES * sum(p.is_file() for p in (tmp_path / "s" / name / "c").rglob("*"))
        assert disk[name] == nbytes + metadata + checksums, name
    assert planned["hskcache_total_bytes"] == sum(expected.values())
    # the store knows its real lengths (1..32 tokens), so the paper layout shrinks there
    assert measured["paper_values_bytes"] < planned["paper_values_bytes"]


def test_store_mode_table_and_smaller_configs(tmp_path, capsys):
    shape = store_shape(32, 30522, 2, False, 3, 16, 64, 0.5, "mag")
    write_store(tmp_path / "s", shape, 10, student_layers=2)
    out = run(["budget", "--store", str(tmp_path / "s"), "--configs", "1,4,0.25", "3,16,0.5"], capsys)
    assert "on disk" in out and "width_code" in out
    rows = json.loads(run(["budget", "--store", str(tmp_path / "s"), "--json", "--configs", "1,4,0.25", "3,16,0.5"], capsys))
    assert [r["config"] for r in rows] == ["3,16,0.5", "1,4,0.25"]  # own row first, not repeated
    assert rows[1]["disk_bytes"] is None
    assert rows[1]["hskcache_total_bytes"] < rows[0]["hskcache_total_bytes"]


def test_store_mode_refuses_plan_flags_and_non_stores(tmp_path):
    assert "--seq-len" in fails(["budget", "--store", str(tmp_path), "--seq-len", "12"])
    assert "not an hskcache store" in fails(["budget", "--store", str(tmp_path)])


# --- configuration sets ------------------------------------------------------

def test_grid_search_space():
    configs = budget.parse_configs(["grid:1±10%"], student_layers=6, seq_len=128)
    assert len(configs) == 14  # the paper counts 13 (see docs/budget.md)
    assert all(abs(c.a_hsk - 1) <= 0.1 + 1e-9 and c.n_l <= 50 and c.n_d <= 7 for c in configs)
    assert {(1, 9, 0.1), (1, 11, 0.1), (5, 2, 0.1)} <= {(c.n_d, c.n_l, c.n_w) for c in configs}
    same = budget.parse_configs(["grid:5+-0.25"], 6, 128)
    assert same == budget.parse_configs(["grid:5±5%"], 6, 128) and len(same) == 46
    assert all(c.n_d <= 3 for c in budget.parse_configs(["grid:3±5%"], 2, 128))
    assert all(c.n_l <= 8 for c in budget.parse_configs(["grid:3±5%"], 6, 8))


def test_table5_sets():
    assert [len(g) for g in budget.TABLE5.values()] == [13, 20, 31, 36, 21]
    for label, group in budget.TABLE5.items():
        target, tol = (float(x) for x in label.rstrip("%").split("±"))
        assert all(abs(d * n * w - target) <= target * tol / 100 + 1e-9 for d, n, w in group), label
    rosita = budget.parse_configs(["table5"], student_layers=6, seq_len=128)
    assert len(rosita) == 121  # no configuration repeats across groups
    tiny = budget.parse_configs(["table5"], student_layers=4, seq_len=128)
    assert all(c.n_d <= 5 for c in tiny) and len(tiny) < len(rosita)


def test_configs_are_deduplicated_in_order():
    configs = budget.parse_configs(["full", "1,9,0.1", "table5", "(1, 9, 0.10)"], 6, 128)
    assert [c.name for c in configs[:2]] == ["full", "1,9,0.1"]
    assert len(configs) == 1 + len(budget.parse_configs(["table5"], 6, 128))


@pytest.mark.parametrize("spec, words", [
    ("1,9", "malformed"), ("a,b,c", "malformed"), ("1,9,0.1,2", "malformed"),
    ("1,9,1.5", "N^W"), ("1,9,0", "N^W"), ("8,9,0.1", "N^D=8"), ("0,9,0.1", "N^D"), ("1,200,0.1", "N^L"),
    ("grid:5", "grid"), ("grid:5±x", "grid"), ("grid:5000±1", "matches no configuration"),
])
def test_bad_configs_give_one_line(spec, words):
    assert words in fails(PLAN + ["--configs", spec])


@pytest.mark.parametrize("argv, words", [
    (["budget"], "--plan"),
    (["budget", "--plan", "--examples", "5", "--teacher-width", "8"], "--seq-len, --student-layers"),
    (["budget", "--plan", "--examples", "5", "--seq-len", "8", "--student-layers", "2"], "--teacher-width"),
    (PLAN + ["--num-labels", "-1"], "--num-labels"),
    (["budget", "--plan", "--seq-len", "8", "--student-layers", "2", "--teacher-width", "8"], "--examples"),
    (PLAN + ["--data", "x.csv"], "--teacher"),
    (PLAN + ["--token-strategy", "att"], "only apply with --data"),
])
def test_bad_arguments_give_one_line(argv, words):
    assert words in fails(argv)


def test_an_unknown_token_strategy_is_the_flags_one_rule(tmp_path, capsys):
    """--token-strategy takes `extract`'s list (the field's `choices`): a flag outside it is argparse's one line,
    a --config value the settings' one line, both before any data is read (the teacher "T" is never loaded)."""
    from hskcache.cli.main import main
    from hskcache.selection.hsk import TOKEN_STRATEGIES

    argv = PLAN + ["--teacher", "T", "--data", "x.csv"]
    with pytest.raises(SystemExit) as exit_:
        main(argv + ["--token-strategy", "nosep"])
    err = capsys.readouterr().err.splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and "--token-strategy: invalid choice: 'nosep'" in err[0], err
    toml = tmp_path / "b.toml"
    toml.write_text('token_strategy = "nosep"\n')
    assert main(argv + ["--config", str(toml)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"hskcache: error: --token-strategy 'nosep' is unknown; use one of {', '.join(TOKEN_STRATEGIES)}"]


def test_zero_labels_plan_a_task_agnostic_store(capsys):
    """--num-labels 0 (a bare encoder's store) drops the logits (float32 each) and the label (int64) of every row."""
    other = {n: json.loads(run(["budget", "--plan", "--examples", "10", "--seq-len", "16", "--student-layers", "2",
                                "--teacher-width", "32", "--num-labels", str(n), "--json"], capsys))[0]
             for n in (3, 0)}
    assert other[3]["hskcache_other_bytes"] - other[0]["hskcache_other_bytes"] == 10 * (3 * 4 + 8)
    assert other[3]["hskcache_values_bytes"] == other[0]["hskcache_values_bytes"]


# --- output formats ----------------------------------------------------------

def test_table_csv_json_and_plot(tmp_path, capsys):
    table = run(PLAN + ["--configs", "1,9,0.1", "full"], capsys)
    assert "1.01 GiB" in table and "2.53 GiB" in table and "bitmask" in table and "disk ratio" in table
    rows = list(csv.DictReader(io.StringIO(run(PLAN + ["--csv", "--configs", "table5"], capsys))))
    assert len(rows) == 121 and rows[0]["config"] == "2,1,0.5"
    keys = set(json.loads(run(PLAN + ["--json"], capsys))[0])
    assert {"config", "n_d", "n_l", "n_w", "a_hsk", "fraction", "paper_values_bytes", "paper_mask_bytes",
            "hskcache_values_bytes", "hskcache_mask_bytes", "hskcache_total_bytes", "disk_total_bytes",
            "disk_ratio"} <= keys
    run(PLAN + ["--json", "--plot", str(tmp_path / "b.png"), "--configs", "grid:3±5%", "full"], capsys)
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_help_renders(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["budget", "--help"])
    assert "grid:5±10%" in capsys.readouterr().out


# --- --teacher / --data ------------------------------------------------------

def test_plan_from_teacher_and_data(teacher_dir, pair_csv, capsys):
    base = ["budget", "--plan", "--teacher", str(teacher_dir), "--seq-len", "16", "--student-layers", "2",
            "--json", "--configs", "3,16,1.0"]
    left = json.loads(run(base + ["--data", str(pair_csv)], capsys))[0]
    nosep = json.loads(run(base + ["--data", str(pair_csv), "--token-strategy", "att-nosep"], capsys))[0]
    padded = json.loads(run(base + ["--examples", "36"], capsys))[0]
    assert left["kept_width"] == 32  # hidden size of the tiny teacher
    assert nosep["paper_values_bytes"] < left["paper_values_bytes"] < padded["paper_values_bytes"]
    assert left["hskcache_total_bytes"] == padded["hskcache_total_bytes"]  # fixed-shape store, 36 examples
    assert "--teacher-width" in fails(base + ["--examples", "36", "--teacher-width", "32"])


def test_a_teacher_plan_loads_its_config_and_tokenizer_once(teacher_dir, pair_csv, capsys, monkeypatch):
    """--teacher with --data and an opt-in kind reads the config three ways (widths and labels, the data's
    token lengths, the attention heads and layers): it is loaded once, as is the tokenizer."""
    from hskcache.teacher import loading

    loaded = []
    for name in ("load_config", "load_tokenizer"):
        real = getattr(loading, name)
        monkeypatch.setattr(loading, name, lambda *a, _real=real, _name=name, **k: loaded.append(_name) or _real(*a, **k))
    row = json.loads(run(["budget", "--plan", "--teacher", str(teacher_dir), "--data", str(pair_csv), "--seq-len", "16",
                          "--student-layers", "2", "--knowledge", "hsk,att", "--json", "--configs", "3,16,1.0"],
                         capsys))[0]
    assert sorted(loaded) == ["load_config", "load_tokenizer"]
    assert row["kept_width"] == 32  # the tiny teacher's width
    assert row["hskcache_group_bytes"] and all(n > 0 for n in row["hskcache_group_bytes"].values())  # its relations
