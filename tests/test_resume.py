"""Resuming inside a stage: a stopped run, resumed, gives what a run that never stopped gives."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from deepcomp.errors import CheckpointError
from deepcomp.prune import PruneConfig, prune
from deepcomp.quantize import QuantizeConfig, quantize
from deepcomp.resume import Checkpoint, ResumeMismatchError, Stopped, fingerprint
from deepcomp.stagefile import save_stage

from conftest import quiet, stop_after


def noop(*a, **k):
    pass


def _ckpt(path, stage, cfg, sf, restart=False):
    return Checkpoint(path, fingerprint(stage, cfg.to_dict(), sf, "digits"), restart, log=noop)


def _same(a, b):
    assert a.state_dict.keys() == b.state_dict.keys()
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k]), k
    assert a.masks.keys() == b.masks.keys()
    for k in a.masks:
        assert torch.equal(a.masks[k], b.masks[k]), k


def stopped_prune(tmp_path, sf, data, monkeypatch, cfg=None):
    """A global 80% prune with 2 retraining epochs, stopped at step 5 with its checkpoint
    written: (its config, the checkpoint's path)."""
    cfg = cfg or PruneConfig(method="global", sparsity="0.8", retrain_epochs=2, train=quiet())
    path = tmp_path / "p.pt.ckpt"
    with monkeypatch.context() as m:
        stop_after(m, 5)
        with pytest.raises(Stopped):
            prune(sf, data, cfg, log=noop, checkpoint=_ckpt(path, "prune", cfg, sf))
    assert path.exists()
    return cfg, path


# digits: 1,437 training images, 12 steps an epoch at batch 128
PRUNE_CASES = {
    "rounds": (PruneConfig(method="global", sparsity="0.8", iterations=2, retrain_epochs=2,
                           train=quiet(seed=3)), 30, "round 2/2, epoch 1, step 6"),
    "gradual-distill": (PruneConfig(method="lamp", sparsity="0.85", gradual=True, mask_every=4,
                                    retrain_epochs=3, train=quiet(seed=3, distill_weight=0.5)),
                        24, "round 1/1, epoch 3, step 0"),
}


@pytest.mark.parametrize("case", sorted(PRUNE_CASES))
def test_prune_stopped_and_resumed_equals_a_run_never_stopped(tmp_path, trained_lenet, digits,
                                                             monkeypatch, case):
    cfg, steps, where = PRUNE_CASES[case]
    ref = prune(trained_lenet, digits, cfg, log=noop)
    path = tmp_path / "p.pt.ckpt"
    with monkeypatch.context() as m:
        stop_after(m, steps)
        with pytest.raises(Stopped, match=where) as e:
            prune(trained_lenet, digits, cfg, log=noop,
                  checkpoint=_ckpt(path, "prune", cfg, trained_lenet))
    assert e.value.exit_code == 143 and path.exists()
    lines = []
    out = prune(trained_lenet, digits, cfg, log=lines.append,
                checkpoint=_ckpt(path, "prune", cfg, trained_lenet))
    assert any(line.startswith("resuming from") for line in lines)
    _same(out, ref)
    assert out.history[-1]["metrics"] == ref.history[-1]["metrics"]


def test_quantize_fine_tuning_resumes_exactly(tmp_path, trained_lenet, digits, monkeypatch):
    pruned = prune(trained_lenet, None, PruneConfig(method="global", sparsity="0.7"))
    cfg = QuantizeConfig(bits="*=3", finetune=quiet(epochs=2, lr=1e-3, seed=1))
    ref = quantize(pruned, digits, cfg)
    path = tmp_path / "q.pt.ckpt"
    with monkeypatch.context() as m:
        stop_after(m, 17)
        with pytest.raises(Stopped, match="epoch 2, step 5"):
            quantize(pruned, digits, cfg, checkpoint=_ckpt(path, "quantize", cfg, pruned))
    out = quantize(pruned, digits, cfg, checkpoint=_ckpt(path, "quantize", cfg, pruned))
    _same(out, ref)
    for k in ref.quant:
        assert torch.equal(out.quant[k]["codebook"], ref.quant[k]["codebook"])


def test_a_checkpoint_of_other_settings_is_refused_then_restart_discards_it(
        tmp_path, trained_lenet, digits, monkeypatch):
    cfg, path = stopped_prune(tmp_path, trained_lenet, digits, monkeypatch)
    other = PruneConfig(method="global", sparsity="0.8", retrain_epochs=3, train=quiet())
    with pytest.raises(ResumeMismatchError, match="retrain_epochs was 2, is 3 now"):
        prune(trained_lenet, digits, other, checkpoint=_ckpt(path, "prune", other, trained_lenet))
    lines = []
    prune(trained_lenet, digits, other, log=lines.append,
          checkpoint=_ckpt(path, "prune", other, trained_lenet, restart=True))
    assert not any("resuming" in line for line in lines)


def test_a_damaged_checkpoint_is_a_one_line_error(tmp_path, trained_lenet, digits):
    path = tmp_path / "p.pt.ckpt"
    path.write_bytes(b"not a checkpoint")
    cfg = PruneConfig(retrain_epochs=1, train=quiet())
    with pytest.raises(CheckpointError, match="--restart"):
        prune(trained_lenet, digits, cfg, checkpoint=_ckpt(path, "prune", cfg, trained_lenet))


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT (Ctrl-C)"])
def test_a_signal_stops_the_command_which_then_resumes_to_the_same_weights(
        tmp_path, trained_lenet, sig, code):
    """README: SIGTERM or Ctrl-C stops at the next step with the checkpoint written (exit 143
    or 130); the same command resumes and ends with the weights of a run never stopped."""
    base = tmp_path / "b.pt"
    save_stage(str(base), trained_lenet)
    out, ckpt = tmp_path / "p.pt", tmp_path / "p.pt.ckpt"

    def cmd(o):
        return [sys.executable, "-m", "deepcomp", "prune", str(base), "--data", "digits",
                "--method", "global", "--sparsity", "0.8", "--retrain-epochs", "40",
                "--no-progress", "-o", str(o)]
    proc = subprocess.Popen(cmd(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "stopped at round 1/1, epoch" in err and "run the same command to resume" in err
    assert len(err.strip().splitlines()) == 1
    assert ckpt.exists() and not out.exists()

    done = subprocess.run(cmd(out), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stdout
    assert out.exists() and not ckpt.exists()          # removed once the stage finished
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
    ref = tmp_path / "ref.pt"
    subprocess.run(cmd(ref), capture_output=True, text=True, timeout=300, check=True)
    from deepcomp.loading import load_stage
    _same(load_stage(str(out)), load_stage(str(ref)))


def test_restart_discards_the_checkpoint_of_other_settings(tmp_path, trained_lenet, capsys):
    """README: a checkpoint made with other settings is refused, naming the difference, and
    --restart discards it."""
    from deepcomp.cli import main
    base = tmp_path / "b.pt"
    save_stage(str(base), trained_lenet)
    argv = ["prune", str(base), "--data", "digits", "--method", "global", "--sparsity", "0.8",
            "--retrain-epochs", "1", "--no-progress", "-o", str(tmp_path / "p.pt")]
    cfg = PruneConfig(method="global", sparsity="0.5", retrain_epochs=1, train=quiet())
    _ckpt(tmp_path / "p.pt.ckpt", "prune", cfg, trained_lenet).save({"round": 1})
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "made by other settings" in err and "sparsity" in err and err.count("\n") == 1
    assert main(argv + ["--restart"]) == 0
    assert "--restart: discarded" in capsys.readouterr().out
    assert not (tmp_path / "p.pt.ckpt").exists() and (tmp_path / "p.pt").exists()


def test_a_resumed_stage_records_the_time_of_every_run(tmp_path, trained_lenet, digits,
                                                       monkeypatch):
    """docs/STAGEFILE.md: wall_time is the seconds the stage took; a stage stopped and resumed
    counted only its last run."""
    cfg, path = stopped_prune(tmp_path, trained_lenet, digits, monkeypatch)
    saved = torch.load(path, weights_only=True)
    assert 0 < saved["elapsed"] < 600
    saved["elapsed"] = 1000.0                  # as if the first run had taken 1,000 s
    torch.save(saved, path)
    out = prune(trained_lenet, digits, cfg, log=noop,
                checkpoint=_ckpt(path, "prune", cfg, trained_lenet))
    assert 1000 < out.history[-1]["wall_time"] < 1600


def _count_layers(monkeypatch, module, name):
    """Count the calls of ``module.name`` (one per layer scanned)."""
    calls = []
    real = getattr(module, name)

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(module, name, counted)
    return calls


def test_a_stopped_sensitivity_scan_resumes_at_its_next_layer(tmp_path, trained_lenet, digits,
                                                              monkeypatch):
    from deepcomp import allocate
    cfg = PruneConfig(method="sensitivity", sparsity="0.8", retrain_epochs=1, scan_images=300,
                      train=quiet(seed=2))
    ref = prune(trained_lenet, digits, cfg, log=noop)
    path = tmp_path / "p.pt.ckpt"
    with monkeypatch.context() as m:
        stop_after(m, 1)                   # the signal comes while the second layer is scanned
        with pytest.raises(Stopped, match="stopped during a scan, 2 layers done"):
            prune(trained_lenet, digits, cfg, log=noop,
                  checkpoint=_ckpt(path, "prune", cfg, trained_lenet))
    with monkeypatch.context() as m:
        scanned = _count_layers(m, allocate, "prune_one_layer")
        out = prune(trained_lenet, digits, cfg, log=noop,
                    checkpoint=_ckpt(path, "prune", cfg, trained_lenet))
    assert len(scanned) == 1                       # only the third of LeNet-300-100's layers
    _same(out, ref)


def test_a_stopped_bit_width_scan_resumes_at_its_next_layer(tmp_path, trained_lenet, digits,
                                                            monkeypatch):
    from deepcomp import allocate
    pruned = prune(trained_lenet, None, PruneConfig(method="global", sparsity="0.7"))
    cfg = QuantizeConfig(bits="auto:3", scan_images=300, finetune=quiet(epochs=1, lr=1e-3))
    ref = quantize(pruned, digits, cfg)
    path = tmp_path / "q.pt.ckpt"
    with monkeypatch.context() as m:
        stop_after(m, 1)
        with pytest.raises(Stopped, match="stopped during a scan, 2 layers done"):
            quantize(pruned, digits, cfg, checkpoint=_ckpt(path, "quantize", cfg, pruned))
    with monkeypatch.context() as m:
        evaluated = _count_layers(m, allocate, "_evaluate_with")
        out = quantize(pruned, digits, cfg, checkpoint=_ckpt(path, "quantize", cfg, pruned))
    assert len(evaluated) == 4                     # one layer at 5, 4, 3 and 2 bits
    assert out.history[-1]["config"]["layer_bits"] == ref.history[-1]["config"]["layer_bits"]
    _same(out, ref)


@pytest.mark.parametrize("command", ["sweep", "sensitivity"])
def test_a_stopped_analysis_resumes_after_its_last_point(tmp_path, trained_lenet, monkeypatch,
                                                         capsys, command):
    """`deepcomp sweep` and `deepcomp sensitivity` visit many points (minutes each on CIFAR):
    stopped, they keep what they measured in OUTPUT.ckpt and go on from there."""
    from deepcomp import analysis
    from deepcomp.cli import main
    base = tmp_path / "b.pt"
    save_stage(str(base), trained_lenet)
    extra = ["--method", "global,layer"] if command == "sweep" else []

    def argv(out):
        return [command, str(base), "--sparsities", "0.3,0.6,0.9", *extra, "-o", str(out)]
    assert main(argv(tmp_path / "ref")) == 0
    with monkeypatch.context() as m:
        stop_after(m, 1)
        assert main(argv(tmp_path / "run")) == 143
    assert (tmp_path / "run.ckpt").exists() and not (tmp_path / "run.csv").exists()
    with monkeypatch.context() as m:
        visited = _count_layers(m, analysis, "prune_one_layer" if command == "sensitivity"
                                else "_sweep_point")
        assert main(argv(tmp_path / "run")) == 0
    assert len(visited) == (1 if command == "sensitivity" else 4)     # what was left
    import csv

    def rows(path):                     # a sweep's CSV also holds each point's seconds
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(open(path))]
    assert rows(tmp_path / "run.csv") == rows(tmp_path / "ref.csv")
    assert not (tmp_path / "run.ckpt").exists()


def test_a_setting_given_as_a_number_or_as_its_text_is_the_same_run():
    """0.9 from Python and '0.9' from the command line are one request; other values, words
    and booleans are not."""
    from deepcomp.resume import _first_difference
    assert _first_difference({"s": "0.9", "b": 4}, {"s": 0.9, "b": "4"}) is None
    assert _first_difference({"s": "0.90"}, {"s": 0.9}) is None
    assert "s was" in _first_difference({"s": "0.9"}, {"s": 0.8})
    assert _first_difference({"s": "auto"}, {"s": 1}) is not None
    assert _first_difference({"s": "1"}, {"s": True}) is not None
