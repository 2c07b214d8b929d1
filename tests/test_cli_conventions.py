"""One command-line convention across `hskcache` and `students` (hskcache.options)."""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from hskcache.cli import main as hskcache_cli
from hskcache.teacher.config import ExtractConfig, build_config
from hskcache.errors import UserError
from hskcache.kinds.hsk import STORED, HSKRead, HSKSettings
from hskcache.kinds.qk import ProjectionRelationSettings
from hskcache.options import Group, add_fields, columns, flag_name, leaves, setting, settings_from
from hskcache.teacher.augment import AugmentConfig
from students import cli as students_cli
from students.cli import EvalConfig
from students.training.finetune import FinetuneConfig
from students.training.runtime import Runtime
from students.training.trainer import TrainConfig

README = Path(__file__).resolve().parents[1] / "README.md"
PROGRAMS = ((hskcache_cli, "hskcache"), (students_cli, "students"))


def _commands(table, path=()):
    for command in table:
        if isinstance(command, Group):
            yield from _commands(command.commands, (*path, command.name))
        else:
            yield (*path, command.name), command


EVERY_COMMAND = [(module, (*path,), command) for module, _ in PROGRAMS for path, command in _commands(module.COMMANDS)]


def _subparser(module, path):
    parser = module.build_parser()
    for name in path:
        parser = parser._subparsers._group_actions[0].choices[name]
    return parser


def _parse(module, argv):
    args = module.build_parser().parse_args(argv)
    return settings_from(args.command_.settings, args, "test")


def _train(argv):
    run = _parse(students_cli, ["train", *argv])
    return run.source, run.train


@pytest.mark.parametrize(("module", "path", "command"), EVERY_COMMAND,
                         ids=[" ".join(path) for _, path, _ in EVERY_COMMAND])
def test_every_parser_is_its_settings_dataclass_with_config(module, path, command):
    """Each flag is one field of the command's settings (nested ones included), none written by hand,
    and each command takes --config."""
    parser = _subparser(module, path)
    visible = {o for a in parser._actions for o in a.option_strings if a.help != "==SUPPRESS=="}
    wanted = {flag_name(f.name) for f in leaves(command.settings) if "help" in f.metadata}
    assert visible == wanted | {"-h", "--help", "--config"}
    hidden = {o for a in parser._actions for o in a.option_strings if a.help == "==SUPPRESS=="}
    assert hidden == {old for f in leaves(command.settings) for old in f.metadata.get("aliases", ())}


@pytest.mark.parametrize(("module", "path", "command"), EVERY_COMMAND,
                         ids=[" ".join(path) for _, path, _ in EVERY_COMMAND])
def test_every_command_reads_a_config_file(tmp_path, module, path, command):
    """A TOML key is a flag name; an unknown key names the known ones (before any work)."""
    toml = tmp_path / "c.toml"
    toml.write_text("bogus_key = 1\n")
    with pytest.raises(UserError, match="unknown setting 'bogus_key'"):
        _parse(module, [*path, "--config", str(toml)])


def test_a_config_value_outside_the_choices_is_one_line(tmp_path):
    """argparse checks a flag's choices; the same rule holds for the file's value."""
    toml = tmp_path / "c.toml"
    toml.write_text('model = "M"\ndata = "D"\ndevice = "tpu"\n')
    with pytest.raises(UserError, match="--device 'tpu' is unknown; use one of auto, cpu, cuda"):
        _parse(students_cli, ["eval", "--config", str(toml)])
    with pytest.raises(SystemExit):
        _parse(students_cli, ["eval", "--model", "M", "--data", "D", "--device", "tpu"])


@pytest.mark.parametrize(("argv", "key", "value"), [
    (["inspect"], "store", "S"), (["verify"], "threads", 3), (["budget"], "store", "S"),
    (["build", "rosita"], "importance_examples", 7), (["eval"], "batch_size", 5), (["export"], "quantize", "int8"),
])
def test_config_file_values_and_flags_win(tmp_path, argv, key, value):
    module = students_cli if argv[0] in ("build", "eval", "export") else hskcache_cli
    required = {"inspect": {"store": "S"}, "verify": {"store": "S"}, "budget": {"store": "S"},
                "build": {"teacher": "T", "store": "S", "out": "O"}, "eval": {"model": "M", "data": "D"},
                "export": {"model": "M", "out": "O"}}[argv[0]]
    toml = tmp_path / "c.toml"
    toml.write_text("".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in {**required, key: value}.items()))
    assert getattr(_parse(module, [*argv, "--config", str(toml)]), key) == value
    flag_value = {"S": "S2", 3: "4", 7: "8", 5: "6", "int8": "int8"}[value]
    got = getattr(_parse(module, [*argv, "--config", str(toml), flag_name(key), flag_value]), key)
    assert str(got) == flag_value


def test_every_train_setting_is_a_flag_and_a_toml_key(tmp_path):
    """The parser is built from TrainConfig: no field lacks its flag, none is copied by hand."""
    flags = {o for a in _subparser(students_cli, ["train"])._actions for o in a.option_strings}
    assert {"--" + f.name.replace("_", "-") for f in leaves(TrainConfig)} <= flags  # a kind's read settings too
    toml = tmp_path / "train.toml"
    toml.write_text('store = "S"\nstudent = "STUDENT"\nout = "RUN"\nhsk = "1,9,0.1"\nhsk-epochs = 3\n'
                    'text_cols = ["a", "b"]\nseed = 4\nquiet = true\n')
    source, cfg = _train(["--config", str(toml), "--seed", "7"])
    assert source.store == "S"
    assert (cfg.student, cfg.out, cfg.reads["hsk"], cfg.hsk_epochs, cfg.text_cols, cfg.runtime.quiet) == \
        ("STUDENT", "RUN", HSKRead((1, 9, 0.1)), 3, ("a", "b"), True)  # --hsk: the HSK kind's read setting
    assert cfg.seed == 7  # flags win over the file
    assert cfg.pred_epochs == TrainConfig.pred_epochs  # neither: the dataclass default
    _, cfg = _train(["--store", "S", "--student", "X", "--out", "R", "--text-cols", "a,b"])
    assert cfg.reads["hsk"] == HSKRead(STORED) and cfg.text_cols == ("a", "b")


def test_train_and_finetune_share_their_runtime_settings(tmp_path):
    """--device, --dtype, --threads, --quiet: one settings class (`Runtime`) nested in both commands, so the
    same flags with the same help, the same TOML keys, and one check."""
    runtime_flags = {"--device", "--dtype", "--threads", "--quiet"}

    def helps(module, path):
        return {o: a.help for a in _subparser(module, path)._actions for o in a.option_strings if o in runtime_flags}

    assert helps(students_cli, ["train"]) == helps(hskcache_cli, ["finetune"]) and len(helps(students_cli, ["train"])) == 4
    toml = tmp_path / "run.toml"
    toml.write_text('threads = 2\nquiet = true\ndtype = "fp32"\n')
    finetune = _parse(hskcache_cli, ["finetune", "--teacher", "T", "--data", "D", "--eval-data", "E", "--out", "O",
                                     "--config", str(toml)])
    _, train = _train(["--store", "S", "--student", "X", "--out", "R", "--config", str(toml), "--threads", "3"])
    assert (finetune.runtime.threads, finetune.runtime.quiet, finetune.runtime.dtype) == (2, True, "fp32")
    assert (train.runtime.threads, train.runtime.quiet, train.runtime.dtype) == (3, True, "fp32")  # the flag wins
    for command in (["finetune", "--teacher", "T", "--data", "D", "--eval-data", "E", "--out", "O"],
                    ["train", "--store", "S", "--student", "X", "--out", "R"]):
        module = hskcache_cli if command[0] == "finetune" else students_cli
        with pytest.raises(UserError, match="--threads must be at least 1, got 0"):
            _parse(module, [*command, "--threads", "0"])


def test_train_config_file_errors(tmp_path):
    toml = tmp_path / "train.toml"
    toml.write_text('student = "X"\nout = "R"\nepochs = 3\n')
    with pytest.raises(UserError, match="unknown setting 'epochs'"):
        _train(["--config", str(toml)])
    with pytest.raises(UserError, match="--student is required"):
        _train(["--out", "R", "--store", "S"])
    with pytest.raises(UserError, match="pass exactly one knowledge source"):
        _train(["--student", "X", "--out", "R"])
    with pytest.raises(UserError, match="--width is an online-baseline setting"):
        _train(["--student", "X", "--out", "R", "--store", "S", "--width", "0.5"])


def test_the_online_baseline_has_its_own_settings_and_no_store():
    """Was: a fake `"store": cfg.out` handed to ExtractConfig."""
    source, cfg = _train(["--teacher", "T", "--data", "D", "--student", "X", "--out", "R", "--student-layers", "2",
                          "--width", "0.5", "--seed", "9", "--max-length", "32"])
    extraction = source.extraction(cfg)
    assert extraction.store is None and (extraction.teacher, extraction.data) == ("T", "D")
    hsk = extraction.kinds["hsk"]
    assert (hsk.width, extraction.max_length, hsk.width_seed, cfg.seed) == (0.5, 32, 0, 9)
    with pytest.raises(UserError, match="--teacher needs --data"):
        _train(["--teacher", "T", "--student", "X", "--out", "R"])


def _deprecated(prog, old, new):
    return f"{prog}: warning: {old} is deprecated; use {new}"


def test_old_spellings_still_work_with_one_warning(capsys):
    source, _ = _train(["--cache", "S", "--student", "X", "--out", "R"])
    assert source.store == "S"
    assert _deprecated("students train", "--cache", "--store") in capsys.readouterr().err
    run = _parse(hskcache_cli, ["extract", "--teacher", "T", "--data", "D", "--out", "S", "--seed", "3",
                                "--student-layers", "2"])
    assert (run.extraction.store, run.extraction.kinds["hsk"].width_seed) == ("S", 3)
    err = capsys.readouterr().err
    assert _deprecated("hskcache extract", "--out", "--store") in err
    assert _deprecated("hskcache extract", "--seed", "--width-seed") in err
    # The two seeds are different flags: extraction's width seed, training's seed.
    assert "--width-seed" in _subparser(hskcache_cli, ["extract"]).format_help()
    for argv in (["inspect", "S"], ["verify", "S"], ["budget", "S"]):
        assert _parse(hskcache_cli, argv).store == "S"
        assert capsys.readouterr().err.strip() == _deprecated(
            "test", "STORE as a positional argument", "--store STORE")
    with pytest.raises(UserError, match="give --store once"):
        _parse(hskcache_cli, ["inspect", "S", "--store", "S"])
    build = _parse(students_cli, ["build", "rosita", "--teacher", "T", "--cache", "S", "--out", "O"])
    assert build.store == "S"
    assert _deprecated("students build rosita", "--cache", "--store") in capsys.readouterr().err


def test_extract_toml_accepts_the_old_keys_with_a_warning(tmp_path, capsys):
    toml = tmp_path / "extract.toml"
    toml.write_text('teacher = "T"\ndata = "D"\nout = "S"\nseed = 2\nstudent-layers = 2\nteacher_layers = [0, 1, 2]\n')
    with pytest.raises(UserError, match="either --student-layers or --teacher-layers"):
        build_config({}, str(toml))
    toml.write_text('teacher = "T"\ndata = "D"\nout = "S"\nseed = 2\nteacher_layers = [0, 1, 2]\n')
    capsys.readouterr()
    cfg = build_config({}, str(toml))
    assert (cfg.store, cfg.kinds["hsk"].width_seed, cfg.teacher_layers) == ("S", 2, (0, 1, 2))
    err = capsys.readouterr().err
    assert _deprecated("hskcache", f"config key 'out' in {toml}", "'store'") in err
    assert _deprecated("hskcache", f"config key 'seed' in {toml}", "'width_seed'") in err


def test_readme_lists_every_deprecated_spelling():
    """One list, in the README's "Deprecated spellings" note, of every alias the parsers accept."""
    note = README.read_text().split("### Deprecated spellings", 1)[1].split("\n#", 1)[0]
    for _, path, command in EVERY_COMMAND:
        for f in leaves(command.settings):
            for old in f.metadata.get("aliases", ()):
                assert f"`{old}`" in note and flag_name(f.name) in note, (path, old)
            if "positional" in f.metadata:
                assert f"{' '.join(path)} {f.metadata['positional']}`" in note, path


def test_text_cols_is_a_comma_list_everywhere():
    assert columns("a,b") == ("a", "b") and columns(["a", "b"]) == ("a", "b") and columns(None) is None
    run = _parse(hskcache_cli, ["extract", "--text-cols", "a,b", "--teacher", "T", "--data", "D", "--store", "S",
                                "--student-layers", "2"])
    assert run.extraction.text_cols == ("a", "b")
    for argv in (["eval", "--model", "M", "--data", "D"],
                 ["build", "tinybert", "--teacher", "T", "--out", "O", "--init", "random"]):
        assert _parse(students_cli, [*argv, "--text-cols", "a,b"]).text_cols == ("a", "b")


def test_every_store_argument_is_spelled_store():
    for module, path in ((hskcache_cli, ["inspect"]), (hskcache_cli, ["budget"]), (hskcache_cli, ["verify"]),
                         (students_cli, ["build", "rosita"]), (students_cli, ["train"]),
                         (students_cli, ["build", "tinybert"])):
        assert "--store STORE" in _subparser(module, path).format_help()
    assert _parse(hskcache_cli, ["extract", "--store", "S", "--teacher", "T", "--data", "D",
                                 "--student-layers", "2"]).extraction.store == "S"
    assert all(f.name != "out" for f in fields(ExtractConfig))


@pytest.mark.parametrize(("toml", "message"), [
    ('tokens = "many"\n', "setting 'tokens' (--tokens) must be an integer, got 'many'"),
    ("width = true\n", "setting 'width' (--width) must be a number, got True"),
    ("split = 3\n", "setting 'split' (--split) must be a string, got 3"),
])
def test_a_toml_value_of_the_wrong_type_names_the_key(tmp_path, toml, message):
    """Was: "'<' not supported between instances of 'str' and 'int'"."""
    path = tmp_path / "extract.toml"
    path.write_text('teacher = "T"\ndata = "D"\nstore = "S"\nstudent_layers = 2\n' + toml)
    with pytest.raises(UserError) as err:
        build_config({}, str(path))
    assert str(err.value) == message


def test_a_toml_string_of_digits_reads_like_the_flag(tmp_path):
    path = tmp_path / "extract.toml"
    path.write_text('teacher = "T"\ndata = "D"\nstore = "S"\nstudent_layers = "2"\ntokens = "8"\nwidth = 1\n')
    cfg = build_config({}, str(path))
    assert (cfg.student_layers, cfg.kinds["hsk"].tokens, cfg.kinds["hsk"].width) == (2, 8, 1.0)


def test_extract_without_a_store_is_one_line(capsys):
    """ExtractConfig has no store only for the online baseline; extract refuses it before any work."""
    assert hskcache_cli.main(["extract", "--teacher", "T", "--data", "D", "--student-layers", "2"]) == 2
    assert capsys.readouterr().err.strip() == "hskcache: error: --store is required (as a flag or in the --config file)"


def test_tokens_default_to_at_most_the_length():
    flags = {"teacher": "T", "data": "D", "store": "S", "student_layers": 2}
    assert build_config(flags | {"max_length": 24}).kinds["hsk"].tokens == 24
    assert build_config(flags).kinds["hsk"].tokens == 50
    with pytest.raises(UserError, match="--tokens 30 is above --max-length 24"):
        build_config(flags | {"max_length": 24, "tokens": 30})


@pytest.mark.parametrize(("main", "argv", "line"), [
    (hskcache_cli.main, ["extract", "--teacher", "T", "--data", "D", "--store", "S", "--student-layers", "2",
                         "--att-rows", "9"],
     "hskcache: error: --att-rows is a setting of the att, val, qq, kk knowledge, which this run does not use; "
     "store it with --knowledge hsk,att, or drop --att-rows"),
    (hskcache_cli.main, ["extract", "--teacher", "T", "--data", "D", "--store", "S", "--student-layers", "2",
                         "--knowledge", "hsk,att", "--relation-heads", "4"],
     "hskcache: error: --relation-heads is a setting of the qq, kk knowledge, which this run does not use; "
     "store it with --knowledge hsk,att,qq, or drop --relation-heads"),
    (students_cli.main, ["train", "--store", "S", "--student", "X", "--out", "R", "--att-read", "3,2"],
     "students: error: --att-read is a setting of the att, val, qq, kk knowledge, which this run does not use; "
     "compare it with an --objective of att or val or qq or kk, or drop --att-read"),
])
def test_a_kind_flag_without_its_kind_is_refused(capsys, main, argv, line):
    """A kind's setting given for a kind the run does not store (read) would be ignored silently: one line."""
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == line


def test_a_kind_flag_at_its_default_or_with_its_kind_is_taken():
    flags = {"teacher": "T", "data": "D", "store": "S", "student_layers": 2}
    assert build_config(flags | {"att_layers": "last"}).knowledge == ("hsk",)  # the default: nothing ignored
    assert build_config(flags | {"knowledge": "hsk,val", "att_rows": 9}).kinds["val"].att_rows == 9
    assert build_config(flags | {"knowledge": "hsk,kk", "relation_heads": 4}).kinds["kk"].relation_heads == 4


@pytest.mark.parametrize(("main", "argv", "needle"), [
    (students_cli.main, ["train", "--store", "S", "--student", "X", "--out", "R", "--hsk", "-1,3,0.5"],
     "--hsk: expected one argument (write a value that starts with '-' as --flag=VALUE)"),
    (hskcache_cli.main, ["extract", "--teacher", "T", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_a_usage_error_is_one_line(capsys, main, argv, needle):
    """Was: the whole usage block, then the error."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and needle in err[0], err


@pytest.mark.parametrize(("build", "main", "argv", "line"), [
    (lambda: Runtime(threads=0), students_cli.main,
     ["train", "--store", "S", "--student", "X", "--out", "R", "--threads", "0"],
     "students: error: --threads must be at least 1, got 0"),
    (lambda: TrainConfig(student="X", out="R", weight_decay=-0.5), students_cli.main,
     ["train", "--store", "S", "--student", "X", "--out", "R", "--weight-decay", "-0.5"],
     "students: error: --weight-decay must be at least 0, got -0.5"),
    (lambda: AugmentConfig(teacher="T", data="D", out="a.csv", per_example=0), hskcache_cli.main,
     ["augment", "--teacher", "T", "--data", "D", "--out", "a.csv", "--per-example", "0"],
     "hskcache: error: --per-example must be at least 1, got 0"),
    (lambda: ProjectionRelationSettings(relation_heads=0), hskcache_cli.main,
     ["extract", "--teacher", "T", "--data", "D", "--student-layers", "2", "--knowledge", "hsk,qq",
      "--relation-heads", "0"],
     "hskcache: error: --relation-heads must be at least 1, got 0"),
    (lambda: TrainConfig(student="X", out="R", weight_decay=float("nan")), students_cli.main,
     ["train", "--store", "S", "--student", "X", "--out", "R", "--weight-decay", "nan"],
     "students: error: --weight-decay must be at least 0, got nan"),
    (lambda: TrainConfig(student="X", out="R", hsk_lr=0.0), students_cli.main,
     ["train", "--store", "S", "--student", "X", "--out", "R", "--hsk-lr", "0"],
     "students: error: --hsk-lr must be above 0, got 0.0"),
    (lambda: TrainConfig(student="X", out="R", temperature=-1.0), students_cli.main,
     ["train", "--store", "S", "--student", "X", "--out", "R", "--temperature=-1"],
     "students: error: --temperature must be above 0, got -1.0"),
    (lambda: FinetuneConfig(teacher="T", data="D", eval_data="E", out="O", lr=float("nan")), hskcache_cli.main,
     ["finetune", "--teacher", "T", "--data", "D", "--eval-data", "E", "--out", "O", "--lr", "nan"],
     "hskcache: error: --lr must be above 0, got nan"),
    (lambda: FinetuneConfig(teacher="T", data="D", eval_data="E", out="O", max_grad_norm=0.0), hskcache_cli.main,
     ["finetune", "--teacher", "T", "--data", "D", "--eval-data", "E", "--out", "O", "--max-grad-norm", "0"],
     "hskcache: error: --max-grad-norm must be above 0, got 0.0"),
    (lambda: HSKSettings(width=0.0), hskcache_cli.main,
     ["extract", "--teacher", "T", "--data", "D", "--student-layers", "2", "--width", "0"],
     "hskcache: error: --width must be in (0, 1], got 0.0"),
    (lambda: AugmentConfig(teacher="T", data="D", out="a.csv", replace_prob=1.5), hskcache_cli.main,
     ["augment", "--teacher", "T", "--data", "D", "--out", "a.csv", "--replace-prob", "1.5"],
     "hskcache: error: --replace-prob must be in (0, 1], got 1.5"),
    (lambda: FinetuneConfig(teacher="T", data="D", eval_data="E", out="O", warmup_frac=float("nan")),
     hskcache_cli.main,
     ["finetune", "--teacher", "T", "--data", "D", "--eval-data", "E", "--out", "O", "--warmup-frac", "nan"],
     "hskcache: error: --warmup-frac must be in [0, 1), got nan"),
])
def test_a_declared_bound_holds_however_the_settings_are_made(capsys, build, main, argv, line):
    """`setting(..., at_least=N)`, `above=N`, and with them `at_most`/`below` (an interval), are checked by
    `Settings` when the dataclass is made: in code, and from a command line (one line, exit 2), before the
    class's own rules (the teacher "T" is never looked for); nan, which compares with nothing, is refused by
    any bound."""
    with pytest.raises(UserError, match=f"^{re.escape(line.split('error: ')[1])}$"):
        build()
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [line]


def test_a_bound_is_inclusive_and_an_absent_value_is_not_checked():
    assert (Runtime(threads=1).threads, Runtime().threads) == (1, None)
    assert TrainConfig(student="X", out="R", weight_decay=0.0).weight_decay == 0.0
    assert TrainConfig(student="X", out="R").hsk_lr is None  # `above` too: left out, filled in later


def test_an_interval_takes_its_ends_as_declared_and_one_bound_per_side():
    """(0, 1] takes 1 and refuses 0; [0, 1) takes 0 and refuses 1; two lower bounds on one field are refused
    where it is declared (their message would be one interval's)."""
    assert HSKSettings(width=1.0).width == 1.0
    assert FinetuneConfig(teacher="T", data="D", eval_data="E", out="O", warmup_frac=0.0).warmup_frac == 0.0
    with pytest.raises(UserError, match=r"^--warmup-frac must be in \[0, 1\), got 1\.0$"):
        FinetuneConfig(teacher="T", data="D", eval_data="E", out="O", warmup_frac=1.0)
    with pytest.raises(TypeError, match="one lower bound"):
        setting(1.0, "x", at_least=0, above=0)


def test_above_is_strict():
    """`above=0` takes any value over the bound, however small, and refuses the bound itself."""
    assert TrainConfig(student="X", out="R", pred_lr=1e-12).pred_lr == 1e-12
    with pytest.raises(UserError, match=r"^--pred-lr must be above 0, got 0\.0$"):
        TrainConfig(student="X", out="R", pred_lr=0.0)


def test_a_bound_on_a_class_that_would_not_check_it_is_refused():
    """A settings dataclass that declares `at_least` must be a `Settings`, or the bound would be help text only."""
    @dataclass(frozen=True)
    class Plain:
        n: int = setting(1, "n", at_least=1)

    @dataclass(frozen=True)
    class Rate:
        lr: float = setting(1.0, "lr", above=0)

    for plain in (Plain, Rate):
        with pytest.raises(TypeError, match=f"make {plain.__name__} a Settings"):
            add_fields(argparse.ArgumentParser(), plain)


def test_every_device_setting_takes_the_one_list_of_devices():
    """--device (and --dtype) of every command is a field whose `choices` are `hskcache.device`'s lists, so
    one rule checks them all (and `pick_device`, for code that gives a device name of its own)."""
    from hskcache.device import DEVICES, DTYPES

    found = {(name, f.name): f.metadata.get("choices") for module, path, command in EVERY_COMMAND
             for name in [" ".join(path)] for f in leaves(command.settings) if f.name in ("device", "dtype")}
    assert {key[0] for key in found} >= {"extract", "finetune", "train", "eval", "build tinybert", "build rosita"}
    assert all(choices is (DEVICES if key[1] == "device" else DTYPES) for key, choices in found.items()), found


@pytest.mark.parametrize("build", [
    lambda: Runtime(device="tpu"),
    lambda: build_config({"teacher": "T", "data": "D", "student_layers": 2, "device": "tpu"}),
    lambda: EvalConfig(model="M", data="D", device="tpu"),
])
def test_a_device_outside_the_list_is_one_line_however_the_settings_are_made(build):
    with pytest.raises(UserError, match="^--device 'tpu' is unknown; use one of auto, cpu, cuda$"):
        build()


@pytest.mark.parametrize("config", ["TinyBertConfig", "RositaConfig"])
def test_an_unknown_preset_is_one_line_however_the_settings_are_made(config, capsys):
    """Both builds' --preset take the one registry of shapes (`students.models.student.PRESETS`)."""
    from students.build import builder
    from students.models.student import PRESETS

    with pytest.raises(UserError, match=f"^--preset 'huge' is unknown; use one of {', '.join(PRESETS)}$"):
        getattr(builder, config)(teacher="T", out="O", store="S", preset="huge")
    kind = {"TinyBertConfig": "tinybert", "RositaConfig": "rosita"}[config]
    with pytest.raises(SystemExit) as exit_:
        students_cli.main(["build", kind, "--teacher", "T", "--store", "S", "--out", "O", "--preset", "huge"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and "--preset: invalid choice: 'huge'" in err[0], err


def test_budget_and_extract_take_one_list_per_store_setting():
    """A planned store's --width-strategy/--width-code/--values/--compress/--token-strategy are `hskcache extract`'s:
    the same `choices` object (the registry or tuple itself), so adding a width code or strategy reaches both."""
    from hskcache.cli.budget import BudgetConfig
    from hskcache.kinds.hsk import HSKSettings

    extract = {f.name: f for f in leaves(ExtractConfig)} | {f.name: f for f in fields(HSKSettings)}
    for f in fields(BudgetConfig):
        if f.name in ("width_strategy", "width_code", "values", "compress", "token_strategy"):
            assert f.metadata["choices"] is extract[f.name].metadata["choices"], f.name
    with pytest.raises(UserError, match="^--width-code 'gzip' is unknown; use one of bitmask, "):
        HSKSettings(width_code="gzip")
