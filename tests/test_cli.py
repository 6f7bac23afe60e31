"""The command line as a user meets it: exit codes, one-line errors, files written or not."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from deepcomp.cli import main
from deepcomp.models import create


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_then_eval(tmp_path, capsys):
    out = tmp_path / "m.pt"
    code, stdout, _ = run(capsys, "train", "--model", "lenet300", "--data", "digits",
                          "--epochs", "8", "--lr", "0.05", "--no-progress", "-o", str(out))
    assert code == 0 and out.exists()
    top1 = float(stdout.split("top-1 ")[1].split("%")[0])
    assert top1 > 90
    code, stdout, _ = run(capsys, "eval", str(out))
    assert code == 0 and f"top-1 {top1:.2f}%" in stdout      # same data spec, remembered


def test_eval_foreign_checkpoint_needs_model(tmp_path, capsys):
    torch.save({"net": create("lenet300", img_size=8).state_dict()}, tmp_path / "ck.pth")
    code, _, err = run(capsys, "eval", str(tmp_path / "ck.pth"), "--data", "digits")
    assert code == 1 and "give --model NAME" in err
    code, out, _ = run(capsys, "eval", str(tmp_path / "ck.pth"), "--data", "digits",
                       "--model", "lenet300")
    assert code == 0 and "top-1" in out


@pytest.mark.parametrize("argv,code,msg", [
    (["train", "--model", "nope", "--data", "digits", "-o", "x.pt"], 2, "unknown model 'nope'"),
    (["train", "--model", "lenet300", "--data", "mnist:/no/dir", "-o", "x.pt"], 1, "directory not found"),
    (["eval", "/no/such/file.pt", "--data", "digits"], 1, "no such file"),
    (["train", "--model", "lenet300", "--data", "digits", "--device", "tpu", "-o", "x.pt"], 2, "invalid choice"),
    (["prune", "/no/such/file.pt", "-o", "y.pt"], 1, "no such file"),
])
def test_errors_are_one_line_with_exit_codes(tmp_path, capsys, argv, code, msg):
    os.chdir(tmp_path)
    c, _, err = run(capsys, *argv)
    assert c == code and msg in err and err.count("\n") == 1
    assert not os.path.exists("x.pt") and not os.path.exists("y.pt")


def test_mismatched_checkpoint_is_one_line(tmp_path, capsys):
    torch.save(create("lenet300").state_dict(), tmp_path / "ck.pt")
    c, _, err = run(capsys, "eval", str(tmp_path / "ck.pt"), "--model", "lenet5",
                    "--data", "synthetic:1x28x28")
    assert c == 1 and "missing keys" in err and err.count("\n") == 1


@pytest.mark.parametrize("how", ["script", "module"])
def test_console_script_entry_point(how):
    """The installed `deepcomp` command (pyproject's [project.scripts]) and `python -m`."""
    script = shutil.which("deepcomp", path=os.path.dirname(sys.executable)) or \
        shutil.which("deepcomp")
    if how == "script" and script is None:
        pytest.fail("no `deepcomp` command next to this Python: is the package installed?")
    argv = [script] if how == "script" else [sys.executable, "-m", "deepcomp"]
    r = subprocess.run([*argv, "models", "resnet2*"], capture_output=True, text=True, check=True)
    assert "resnet20" in r.stdout and "269,722" in r.stdout
    v = subprocess.run([*argv, "--version"], capture_output=True, text=True, check=True)
    from deepcomp import __version__
    assert v.stdout.strip() == f"deepcomp {__version__}"


@pytest.fixture
def files(tmp_path, trained_lenet):
    """A baseline stage file, its dense .dc, and a text file that is not a checkpoint."""
    from deepcomp.encode import encode
    from deepcomp.stagefile import save_stage
    save_stage(tmp_path / "lenet.pt", trained_lenet)
    encode(trained_lenet, str(tmp_path / "full.dc"))
    (tmp_path / "notckpt.pt").write_text("not a checkpoint\n")
    (tmp_path / "afile").write_text("")
    os.chdir(tmp_path)
    return tmp_path


NO_OPS = [   # each once exited 0 having ignored what it was told (issue 12), or failed late
    (["prune", "lenet.pt", "--sparsity", "0.5", "-o", "y.pt"], 2, "--sparsity does not apply"),
    (["prune", "lenet.pt", "--method", "global", "--sparsity", "1.5", "-o", "y.pt"], 2,
     "out of range"),
    (["prune", "lenet.pt", "--method", "global", "--sensitivity", "1", "-o", "y.pt"], 2,
     "--sensitivity does not apply"),
    (["prune", "lenet.pt", "--min-keep", "0.1", "-o", "y.pt"], 2, "--min-keep does not apply"),
    (["prune", "lenet.pt", "--mask-every", "5", "-o", "y.pt"], 2, "--mask-every does not apply"),
    (["prune", "lenet.pt", "--distill-temperature", "2", "-o", "y.pt"], 2, "distillation is off"),
    (["prune", "lenet.pt", "--retrain-epochs", "0", "--momentum", "0.5", "-o", "y.pt"], 2,
     "nothing is trained"),
    (["quantize", "lenet.pt", "--finetune-epochs", "0", "--finetune-lr", "0.1", "-o", "y.pt"], 2,
     "--finetune-lr does not apply"),
    (["eval", "lenet.pt", "--model", "resnet20"], 2, "--model resnet20 does not apply"),
    (["encode", "lenet.pt", "--index-bits", "5", "-o", "y.pt"], 2, "no pruned layer"),
    (["encode", "lenet.pt", "--data", "digits", "-o", "y.pt"], 2, "--data does not apply"),
    (["encode", "lenet.pt", "--float16", "--data", "synthetic:1x28x28", "-o", "y.dc"], 2,
     "the model was made for [1, 8, 8]"),
    (["encode", "lenet.pt", "--fold-bn", "-o", "y.dc"], 2, "no batch norm to fold"),
    (["encode", "lenet.pt", "--dense-bits", "13", "-o", "y.dc"], 2, "--dense-bits: 13 is out of range (0 <= value <= 12"),
    (["encode", "lenet.pt", "--mantissa-bits", "11", "-o", "y.dc"], 2, "--mantissa-bits: 11 is out of range (0 <= value <= 10"),
    (["report", "lenet.pt", "--layer", "fc1"], 2, "--layer does not apply"),
    (["decode", "full.dc", "-o", "full.dc"], 2, "is an input of this command"),
    (["prune", "lenet.pt", "-o", "lenet.pt"], 2, "give --force"),
    (["prune", "lenet.pt", "-o", "/proc/y.pt"], 1, "cannot write /proc/y.pt"),
    (["prune", "lenet.pt", "-o", "afile/y.pt"], 1, "cannot write afile/y.pt"),
    (["eval", "notckpt.pt", "--model", "lenet300"], 1, "not a torch.save file"),
    (["prune", "lenet.pt", "--spars", "0.5", "-o", "y.pt"], 2, "unrecognized arguments: --spars"),
    (["compress", "lenet.pt", "--max-drop", "1", "--bits", "4", "-o", "y.dc"], 2,
     "--bits does not apply"),
    (["compress", "lenet.pt", "--budget-epochs", "3", "-o", "y.dc"], 2,
     "--budget-epochs does not apply"),
    (["compress", "lenet.pt", "--max-drop", "1", "--method", "std", "-o", "y.dc"], 2,
     "--method std does not apply"),
]


@pytest.mark.parametrize("argv,code,msg", NO_OPS, ids=[" ".join(c[0][:4]) for c in NO_OPS])
def test_nothing_is_silently_ignored(files, capsys, argv, code, msg):
    before = {p.name: p.stat().st_mtime_ns for p in files.iterdir()}
    c, out, err = run(capsys, *argv)
    assert (c, err.count("\n")) == (code, 1) and msg in err, err
    assert {p.name: p.stat().st_mtime_ns for p in files.iterdir()} == before   # nothing written


def test_a_record_names_the_command_that_made_it(files, capsys, trained_lenet):
    """`deepcomp ...` from the command line, `python <argv>` from Python, also after a command."""
    from deepcomp.encode import encode
    from deepcomp.loading import load_stage
    assert load_stage("full.dc").history[-1]["command"].startswith("python ")
    assert run(capsys, "encode", "lenet.pt", "-o", "cli.dc")[0] == 0
    assert load_stage("cli.dc").history[-1]["command"] == "deepcomp encode lenet.pt -o cli.dc"
    encode(trained_lenet, "api.dc")
    assert load_stage("api.dc").history[-1]["command"].startswith("python ")


def test_force_allows_writing_over_the_input(files, capsys):
    c, _, err = run(capsys, "decode", "full.dc", "-o", "full.dc", "--force")
    assert c == 0, err
    assert torch.load("full.dc", weights_only=True).keys() == \
        torch.load("lenet.pt", weights_only=True)["state_dict"].keys()


def test_a_ratio_below_one_is_printed_as_such():
    from deepcomp.cli import _compared
    from deepcomp.sizes import format_ratio
    assert format_ratio(0.996) == "0.996x" and format_ratio(12.34) == "12.3x"
    assert _compared(0.996) == "1.004x LARGER than the" and _compared(2.0) == "2.0x smaller than"


def test_compress_target_mode(files, capsys):
    c, out, err = run(capsys, "compress", "lenet.pt", "--max-drop", "2", "--budget-epochs", "3",
                      "--retrain-epochs", "1", "--no-progress", "-o", "t.dc")
    assert c == 0, err
    assert "target mode: at most 2.0 points" in out and "3 of 3 epochs used" in out
    assert (files / "t.dc").exists() and not (files / "t.search").exists()


def test_messages_after_a_progress_bar_start_on_a_fresh_line(monkeypatch, capsys):
    """On a terminal the bar's line is left open while it is redrawn; whatever is printed next
    (the Ctrl-C message, a log line) must not land on it."""
    import io
    from deepcomp import train

    class Tty(io.StringIO):
        def isatty(self):
            return True
    err = Tty()
    monkeypatch.setattr("sys.stderr", err)
    bar = train.Progress(True, 10, "retrain 1/1", tty_only=True)
    bar.last -= 1                                # due for a redraw
    bar.update(3, lambda: "loss 0.1")
    assert err.getvalue().startswith("\rretrain 1/1 [") and not err.getvalue().endswith("\n")
    from deepcomp.cli import main_print
    main_print("iteration 1/1: top-1 90.00%")
    assert err.getvalue().endswith("\n")          # the bar's line ended first
    assert capsys.readouterr().out == "iteration 1/1: top-1 90.00%\n"
    train.end_line()                              # nothing open: nothing written
    assert err.getvalue().count("\n") == 1
