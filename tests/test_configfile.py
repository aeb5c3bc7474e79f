"""``retrieval.py --config FILE.yaml``: flags from YAML, command line wins, one-line errors naming the
file and key; a run's written configuration (hyp2.configfile.render_config) gives the same Config
back and, trained again, the same history."""
from __future__ import annotations

import json

import pytest
import yaml

from hyp2 import configfile
from hyp2.cli import given_flags, main, parse_config
from hyp2.errors import UserError

TINY = ["--dataset", "demo", "--subset", "60", "--epochs", "2", "--batch_size", "20", "--hash_bit", "8"]


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def same_run(a, b):
    """The same run: every field of the configs equal."""
    return a == b


# ---------------------------------------------------------------------------------------- reading


def test_flags_from_the_file_as_if_typed(tmp_path):
    path = write(tmp_path, "dataset: demo\nhash_bit: 12\nlr: 1e-3\nno_pretrained: true\ncache: false\n"
                           "loss: csq\nloss_opt: {quant_weight: 0.5}\nresult_dir: out\n")
    c = parse_config(["--config", path])
    typed_argv = ["--dataset", "demo", "--hash_bit", "12", "--lr", "0.001", "--no_pretrained", "--loss", "csq",
                  "--loss_opt", "quant_weight=0.5", "--result_dir", "out"]
    typed = parse_config(typed_argv)
    assert same_run(c, typed) and c.lr == 0.001 and dict(c.loss_options) == {"quant_weight": 0.5}
    # the file's keys count as given; false ones do not
    assert set(given_flags(configfile.expand_argv(["--config", path])[0])) == set(given_flags(typed_argv))


def test_command_line_flags_win(tmp_path):
    path = write(tmp_path, "dataset: demo\nhash_bit: 12\ndevice: cpu\nloss_opt: {beta: 0.3, zeta: 0.1}\n")
    assert parse_config(["--config", path, "--hash_bit", "16"]).hash_bit == 16
    assert parse_config(["--hash_bit", "16", "--config", path]).hash_bit == 16  # wherever --config stands
    opts = dict(parse_config(["--config", path, "--loss_opt", "beta=0.7"]).loss_options)
    assert opts == {"beta": 0.7, "zeta": 0.1}  # a typed key replaces that key only
    c = parse_config(["--config", path, "--beta", "0.2"])
    assert c.beta == 0.2 and dict(c.loss_options) == {"beta": 0.2, "zeta": 0.1}
    assert "--device" not in configfile.expand_argv(["--config", path, "--cuda", "0"])[0]  # --cuda replaces device


def test_a_file_set_conflict_is_replaced_not_an_error(tmp_path):
    path = write(tmp_path, "dataset: demo\nresume: true\n")
    c = parse_config(["--config", path, "--overwrite"])
    assert c.overwrite and not c.resume


@pytest.mark.parametrize("text, message", [
    ("hash_bits: 12\n", "c.yaml: unknown key 'hash_bits': not a retrieval.py flag; did you mean 'hash_bit'?"),
    ("config: other.yaml\n", "c.yaml: unknown key 'config'"),
    ("hash_bit: 1.5\n", "c.yaml: hash_bit: expected an integer, got 1.5"),
    ("hash_bit: true\n", "c.yaml: hash_bit: expected an integer, got True"),
    ("hash_bit: twelve\n", "c.yaml: hash_bit: expected an integer, got 'twelve'"),
    ("lr: fast\n", "c.yaml: lr: expected a number, got 'fast'"),
    ("dataset: 2007\n", "c.yaml: dataset: expected a string, got 2007"),
    ("no_save: yes please\n", "c.yaml: no_save: expected true or false"),
    ("no_save: null\n", "c.yaml: no_save: expected true or false, got None"),
    ("plugin: {a: 1}\n", "c.yaml: plugin: expected a list of strings"),
    ("loss_opt: {beta: [1]}\n", "c.yaml: loss_opt: the value of each key must be"),
    ("- dataset: demo\n", "c.yaml: expected a mapping of flag: value"),
    ("hash_bit: [12\n", "c.yaml: not valid YAML at line 2, column 1"),
    ("dataset: demo\nhash_bit: 0\n", "--hash_bit 0: must be between 1 and 256 (the code table's range) "
                                     "(set by --config"),
])
def test_bad_files_are_one_line_naming_file_and_key(tmp_path, capsys, text, message):
    path = write(tmp_path, text)
    assert main(["--config", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_a_typed_bad_value_does_not_blame_the_file(tmp_path):
    path = write(tmp_path, "dataset: demo\n")
    with pytest.raises(UserError) as info:
        parse_config(["--config", path, "--hash_bit", "0"])
    assert "--config" not in str(info.value)


@pytest.mark.parametrize("argv, message", [
    (["--config"], "--config needs a file"),
    (["--config", "a.yaml", "--config=b.yaml"], "--config given twice"),
    (["--config", "missing.yaml"], "--config missing.yaml: no such file"),
])
def test_the_flag_itself(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_strings_parse_as_typed_and_null_means_the_default(tmp_path):
    path = write(tmp_path, "dataset: demo\nhash_bit: '16'\nlr: 1e-5\nzeta: null\nweights: null\nplugin: []\n")
    c = parse_config(["--config", path])
    assert (c.hash_bit, c.lr, c.zeta, c.weights) == (16, 1e-5, None, None)
    assert parse_config(["--config", write(tmp_path, "", "empty.yaml")]).dataset == "voc2007"


def test_check_flags_directly():
    table = configfile.flag_table()
    assert table["no_save"].kind == "bool" and table["loss_opt"].kind == "list" and table["hash_bit"].nullable
    assert configfile.check_flags({"loss_opt": {"beta": 0.5, "flag": True}, "plugin": "x.py"}, "w", table) == {
        "loss_opt": ["beta=0.5", "flag=true"], "plugin": ["x.py"]}
    assert configfile.flags_to_argv({"a": True, "b": False, "c": None, "d": [" x", "y"], "e": 0.1, "f": 3}) == [
        "--a", "--d", " x", "--d", "y", "--e", "0.1", "--f", "3"]


# ---------------------------------------------------------------------------------------- writing


CASES = [
    ["--dataset", "demo"],
    TINY + ["--loss", "csq", "--loss_opt", "quant_weight=0.25", "--lr", "1e-5", "--seed", "7"],
    TINY + ["--beta", "0.3", "--zeta", "0.2"],
    TINY + ["--loss_opt", "beta=0.3", "--cache", "--no_download", "--workers", "2", "--eval_every", "3"],
    TINY + ["--beta", "0.5", "--retrieve", "50", "--rate", "0.05", "--image_size", "40"],
    ["--dataset", "voc2007", "--no_md5", "--voc_url", "http://mirror/voc", "--no_pretrained", "--amp"],
    ["--dataset", "flickr", "--backbone", "alexnet", "--split_file", "split.json", "--data_root", "/data x"],
    ["--dataset", "demo", "--no_save", "--plugin", "docs/examples/my_loss.py", "--loss", "pair_cosine"],
]


@pytest.mark.parametrize("argv", CASES, ids=range(len(CASES)))
def test_written_configuration_gives_the_same_config(tmp_path, argv):
    original = parse_config(argv)
    path = tmp_path / "run.yaml"
    configfile.write_run_config(original, path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith(f"# The resolved configuration of run {original.run_name}.")
    keys = yaml.safe_load(text)
    assert not {"test", "resume", "overwrite", "cuda", "given", "save", "loss_options"} & set(keys)
    again = parse_config(["--config", str(path)])
    assert same_run(again, original), (again, original)


def test_environment_values_stay_in_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HYP2_VOC_URL", "http://env/voc")
    demo, voc = parse_config(["--dataset", "demo"]), parse_config(["--dataset", "voc2012"])
    assert "voc_url" not in configfile.config_flags(demo)  # the demo does not take --voc_url
    assert configfile.config_flags(voc)["voc_url"] == "http://env/voc"
    path = tmp_path / "demo.yaml"
    configfile.write_run_config(demo, path)
    assert same_run(parse_config(["--config", str(path)]), demo)


def test_invocation_flags_are_not_written(tmp_path):
    c = parse_config(TINY + ["--resume"])
    assert "resume" not in configfile.config_flags(c)
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(UserError, match="cannot write the run's configuration"):
        configfile.write_run_config(c, blocked / "run.yaml")


@pytest.mark.slow
@pytest.mark.e2e
def test_a_run_from_its_written_configuration_repeats_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = TINY + ["--result_dir", "a", "--eval_every", "1"]
    assert main(argv) == 0
    assert (tmp_path / "a/demo_small_8.yaml").read_text() == configfile.render_config(parse_config(argv))
    assert main(["--config", "a/demo_small_8.yaml", "--result_dir", "b"]) == 0
    histories = [json.loads((tmp_path / d / "demo_small_8.json").read_text())["history"] for d in "ab"]
    for h in histories:
        for entry in h:
            entry.pop("train_seconds")
    assert histories[0] == histories[1] and len(histories[0]) == 2
