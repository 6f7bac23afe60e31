"""The command line as a user meets it: exit codes, one-line errors, files written or not."""
import os
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


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "deepcomp", "models", "resnet2*"],
                       capture_output=True, text=True, check=True)
    assert "resnet20" in r.stdout and "269,722" in r.stdout
