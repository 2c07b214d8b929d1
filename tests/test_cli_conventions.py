"""One spelling per concept across `hskcache`, `students` and tools/finetune_teacher.py."""
from __future__ import annotations

from dataclasses import fields

import pytest

from hskcache import cli as hskcache_cli
from hskcache.config import ExtractConfig, build_config
from hskcache.errors import UserError
from hskcache.options import columns
from students import cli as students_cli
from students.trainer import STORED, TrainConfig


def _train(argv):
    args = students_cli.build_parser().parse_args(["train", *argv])
    settings = students_cli.train_settings(args)
    return settings, students_cli.train_config(settings)


def test_every_train_setting_is_a_flag_and_a_toml_key(tmp_path):
    """The parser is built from TrainConfig: no field lacks its flag, none is copied by hand."""
    flags = {o for a in students_cli.build_parser()._subparsers._group_actions[0].choices["train"]._actions
             for o in a.option_strings}
    assert {"--" + f.name.replace("_", "-") for f in fields(TrainConfig)} <= flags
    toml = tmp_path / "train.toml"
    toml.write_text('store = "S"\nstudent = "STUDENT"\nout = "RUN"\nhsk = "1,9,0.1"\nhsk-epochs = 3\n'
                    'text_cols = ["a", "b"]\nseed = 4\nquiet = true\n')
    settings, cfg = _train(["--config", str(toml), "--seed", "7"])
    assert settings["store"] == "S"
    assert (cfg.student, cfg.out, cfg.hsk, cfg.hsk_epochs, cfg.text_cols, cfg.quiet) == \
        ("STUDENT", "RUN", (1, 9, 0.1), 3, ("a", "b"), True)
    assert cfg.seed == 7  # flags win over the file
    assert cfg.pred_epochs == TrainConfig.pred_epochs  # neither: the dataclass default
    _, cfg = _train(["--store", "S", "--student", "X", "--out", "R", "--text-cols", "a,b"])
    assert cfg.hsk == STORED and cfg.text_cols == ("a", "b")


def test_train_config_file_errors(tmp_path):
    toml = tmp_path / "train.toml"
    toml.write_text('student = "X"\nout = "R"\nepochs = 3\n')
    with pytest.raises(UserError, match="unknown setting 'epochs'"):
        _train(["--config", str(toml)])
    with pytest.raises(UserError, match="--student is required"):
        _train(["--out", "R"])


def test_old_spellings_still_work_with_a_warning(capsys):
    _settings, _ = _train(["--cache", "S", "--student", "X", "--out", "R"])
    assert _settings["store"] == "S"
    assert "--cache is deprecated; use --store" in capsys.readouterr().err
    args = hskcache_cli.build_parser().parse_args(
        ["extract", "--teacher", "T", "--data", "D", "--out", "S", "--seed", "3", "--student-layers", "2"])
    cfg = build_config({k: v for k, v in vars(args).items() if k not in ("command", "config", "quiet")})
    assert (cfg.store, cfg.width_seed) == ("S", 3)
    err = capsys.readouterr().err
    assert "--out is deprecated; use --store" in err and "--seed is deprecated; use --width-seed" in err
    # The two seeds are different flags: extraction's width seed, training's seed.
    assert "--width-seed" in hskcache_cli.build_parser()._subparsers._group_actions[0].choices["extract"].format_help()


def test_extract_toml_accepts_the_old_keys(tmp_path):
    toml = tmp_path / "extract.toml"
    toml.write_text('teacher = "T"\ndata = "D"\nout = "S"\nseed = 2\nstudent-layers = 2\nteacher_layers = [0, 1, 2]\n')
    with pytest.raises(UserError, match="either --student-layers or --teacher-layers"):
        build_config({}, str(toml))
    toml.write_text('teacher = "T"\ndata = "D"\nout = "S"\nseed = 2\nteacher_layers = [0, 1, 2]\n')
    cfg = build_config({}, str(toml))
    assert (cfg.store, cfg.width_seed, cfg.teacher_layers) == ("S", 2, (0, 1, 2))


def test_text_cols_is_a_comma_list_everywhere():
    assert columns("a,b") == ("a", "b") and columns(["a", "b"]) == ("a", "b") and columns(None) is None
    args = hskcache_cli.build_parser().parse_args(["extract", "--text-cols", "a,b"])
    assert build_config({"teacher": "T", "data": "D", "store": "S", "student_layers": 2,
                         "text_cols": args.text_cols}).text_cols == ("a", "b")


def test_every_store_argument_is_spelled_store():
    parser = hskcache_cli.build_parser()
    for argv in (["inspect", "--store", "S"], ["budget", "--store", "S"], ["extract", "--store", "S"]):
        assert parser.parse_args(argv).store == "S"
    assert parser.parse_args(["inspect", "S"]).store_path == "S"  # the older positional form
    build = students_cli.build_parser().parse_args(
        ["build", "rosita", "--teacher", "T", "--store", "S", "--out", "O"])
    assert build.store == "S"
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
    assert (cfg.student_layers, cfg.tokens, cfg.width) == (2, 8, 1.0)


def test_tokens_default_to_at_most_the_length():
    flags = {"teacher": "T", "data": "D", "store": "S", "student_layers": 2}
    assert build_config(flags | {"max_length": 24}).tokens == 24
    assert build_config(flags).tokens == 50
    with pytest.raises(UserError, match="--tokens 30 is above --max-length 24"):
        build_config(flags | {"max_length": 24, "tokens": 30})


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
