"""Every numeric option of every command, fed anything (hypothesis): a value out of its range is
a one-line usage error (exit 2) before any work; a value in range parses to itself."""
import math

import pytest
from hypothesis import given, settings, strategies as st

from deepcomp.checks import Range, Setting
from deepcomp.cli import build_parser, main


def _numeric_options():
    """(command, option, Range) of every option parsed by a Range or a Setting."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    out = []
    for cmd, p in sub.choices.items():
        for act in p._actions:
            kind = act.type.range if isinstance(act.type, Setting) else act.type
            if isinstance(kind, Range) and act.option_strings:
                out.append((cmd, act.option_strings[0], act.type, kind))
    return out


OPTIONS = _numeric_options()
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(-10 ** 20, 10 ** 20),
                    st.sampled_from(["nan", "inf", "-inf", "1e400", "", "x", "0x10", "1_000"]))


def test_every_numeric_option_has_a_range():
    names = {o for _, o, _, _ in OPTIONS}
    for opt in ("--lr", "--epochs", "--batch-size", "--momentum", "--weight-decay",
                "--warmup-epochs", "--retrain-lr", "--finetune-lr", "--sensitivity",
                "--sparsity", "--bits", "--max-drop", "--dense-bits", "--mantissa-bits",
                "--distill-weight",
                "--distill-temperature", "--mask-every", "--ramp-fraction", "--min-keep"):
        assert opt in names, opt


@settings(max_examples=300, deadline=None)
@given(choice=st.sampled_from(OPTIONS), value=NUMBERS)
def test_a_value_parses_to_itself_in_range_or_is_one_line_exit_2(choice, value):
    cmd, opt, parse, rng = choice
    text = repr(value) if isinstance(value, float) else str(value)
    try:
        got = parse(text)
    except Exception as e:                     # argparse turns it into its one-line error
        assert type(e).__name__ == "ArgumentTypeError" and "\n" not in str(e)
        return
    number = rng.kind(got) if isinstance(parse, Range) else rng.kind(text.rpartition("=")[2])
    assert rng.ok(number) and math.isfinite(number)


@pytest.mark.parametrize("argv", [
    ["train", "--model", "lenet300", "--data", "digits", "--lr", "nan", "-o", "X"],
    ["train", "--model", "lenet300", "--data", "digits", "--epochs", "-2", "-o", "X"],
    ["train", "--model", "lenet300", "--data", "digits", "--epochs", "0", "-o", "X"],
    ["train", "--model", "lenet300", "--data", "digits", "--batch-size", "0", "-o", "X"],
    ["train", "--model", "lenet300", "--data", "digits", "--warmup-epochs", "-3", "-o", "X"],
    ["train", "--model", "lenet300", "--data", "digits", "--momentum", "5", "-o", "X"],
    ["train", "--model", "lenet300", "--data", "digits", "--weight-decay", "nan", "-o", "X"],
    ["prune", "IN", "--retrain-lr", "nan", "-o", "X"],
    ["prune", "IN", "--retrain-lr", "1e30", "-o", "X"],
    ["prune", "IN", "--retrain-lr", "-0.1", "-o", "X"],
    ["prune", "IN", "--sensitivity", "inf", "-o", "X"],
    ["quantize", "IN", "--momentum", "-1", "-o", "X"],
    ["quantize", "IN", "--finetune-lr", "-1", "-o", "X"],
    ["quantize", "IN", "--finetune-lr", "nan", "-o", "X"],
    ["compress", "IN", "--max-drop", "nan", "-o", "X.dc"],
])
def test_nonsense_values_are_refused_before_any_work(tmp_path, capsys, argv, monkeypatch):
    """The issue's examples: each was accepted (or failed after minutes of work, or with a
    traceback). Now exit 2, one line, nothing written, even beside a leftover checkpoint."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "IN").write_bytes(b"not read")
    (tmp_path / "X.ckpt").write_bytes(b"a leftover checkpoint")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "out of range" in err, err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
