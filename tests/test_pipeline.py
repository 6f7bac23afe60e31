"""compress end to end on digits, its resumption, and the embedded demo."""
import pytest
import torch

from deepcomp.cli import main
from deepcomp.loading import read_dc
from deepcomp.errors import UsageError
from deepcomp.pipeline import CompressConfig, compress
from deepcomp.prune import PruneConfig
from deepcomp.quantize import QuantizeConfig
from deepcomp.report import read_inputs, stage_rows
from deepcomp.loading import load_stage

from conftest import quiet


def _config():
    return CompressConfig(prune=PruneConfig(method="global", sparsity="0.8", retrain_epochs=2,
                                            train=quiet()),
                          quantize=QuantizeConfig(finetune=quiet(epochs=1, lr=1e-3)))


def test_compress_writes_every_stage_and_restores_the_model(trained_lenet, digits, tmp_path):
    out = str(tmp_path / "m.dc")
    paths = compress(trained_lenet, digits, out, _config(), log=lambda *a: None)
    assert paths == [str(tmp_path / "m.pruned.pt"), str(tmp_path / "m.quantized.pt"), out]
    quantized = load_stage(paths[1])
    decoded = read_dc(out)
    for k, v in quantized.state_dict.items():
        assert torch.equal(decoded.state_dict[k], v)
    rows = stage_rows(read_inputs([out]))
    assert [r["stage"] for r in rows] == ["baseline", "pruned", "quantized", "encoded"]
    assert rows[-1]["ratio"] > rows[0]["ratio"] * 5
    assert abs(rows[2]["top1"] - rows[1]["top1"]) < 3


def test_compress_resumes_from_the_last_finished_stage(trained_lenet, digits, tmp_path):
    out = str(tmp_path / "m.dc")
    compress(trained_lenet, digits, out, _config(), log=lambda *a: None)
    before = (tmp_path / "m.pruned.pt").stat().st_mtime_ns, (tmp_path / "m.quantized.pt").stat().st_mtime_ns
    logs = []
    compress(trained_lenet, digits, out, _config(), log=logs.append)
    assert sum("resuming" in line for line in logs) == 2
    assert before == ((tmp_path / "m.pruned.pt").stat().st_mtime_ns,
                      (tmp_path / "m.quantized.pt").stat().st_mtime_ns)
    # a different request for the quantization: the stage file of other settings is not
    # replaced silently (an error naming it, nothing changed); with force it is redone, and
    # the pruning, made by the same settings, is kept
    cfg = _config()
    cfg.quantize.bits = "*=4"
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(UsageError, match="m.quantized.pt exists and was not made by these"):
        compress(trained_lenet, digits, out, cfg, log=lambda *a: None)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files
    logs = []
    compress(trained_lenet, digits, out, cfg, log=logs.append, force=True)
    assert sum("resuming" in line for line in logs) == 1
    assert load_stage(str(tmp_path / "m.quantized.pt")).quant["fc1.weight"]["bits"] == 4


def test_compress_checks_patterns_and_options_before_any_stage(trained_lenet, digits, tmp_path):
    """A pattern that matches no layer, or --fold-bn on a model without batch norm, trained
    for minutes before it failed; now it fails first, writing nothing."""
    for edit, msg in ((lambda c: setattr(c.quantize, "bits", "zz*=8,*=5"), "matches no layer"),
                      (lambda c: setattr(c.encode, "fold_batchnorm", True), "no batch norm"),
                      (lambda c: setattr(c.encode, "index_bits", "nope=4"), "matches no layer")):
        cfg = _config()
        edit(cfg)
        with pytest.raises(UsageError, match=msg):
            compress(trained_lenet, digits, str(tmp_path / "m.dc"), cfg, log=lambda *a: None)
        assert list(tmp_path.iterdir()) == []


def test_demo_prints_the_per_stage_table(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    for stage in ("baseline", "pruned", "quantized", "encoded"):
        assert f"\n{stage} " in out
    assert (tmp_path / "demo" / "lenet300-digits.dc").exists()
    assert main(["eval", str(tmp_path / "demo" / "lenet300-digits.dc")]) == 0


def test_seeded_runs_are_identical_bit_for_bit(trained_lenet, digits, tmp_path):
    """Training, pruning, quantization and encoding are deterministic for a seed: two runs give
    the same tensors, masks, codebooks and accuracies exactly (the files differ only in the
    wall times of their history)."""
    a = compress(trained_lenet, digits, str(tmp_path / "a.dc"), _config(), log=lambda *a: None)
    b = compress(trained_lenet, digits, str(tmp_path / "b.dc"), _config(), log=lambda *a: None)
    for pa, pb in zip(a, b):
        sa, sb = load_stage(pa), load_stage(pb)
        assert sa.state_dict.keys() == sb.state_dict.keys()
        assert all(torch.equal(sa.state_dict[k], sb.state_dict[k]) for k in sa.state_dict)
        assert all(torch.equal(sa.masks[k], sb.masks[k]) for k in sa.masks)
        assert all(torch.equal(sa.quant[k]["codebook"], sb.quant[k]["codebook"])
                   for k in sa.quant)
        assert sa.history[-1]["metrics"] == sb.history[-1]["metrics"]


def _drop(obj, name):
    """``obj`` without the setting ``name`` anywhere in it: what an older deepcomp, which did
    not have that setting, wrote."""
    if isinstance(obj, dict):
        return {k: _drop(v, name) for k, v in obj.items() if k != name}
    if isinstance(obj, list):
        return [_drop(v, name) for v in obj]
    return obj


def test_stage_files_keyed_the_old_way_are_still_recognised(trained_lenet, digits, tmp_path):
    """Stage files made before the pipeline key became the checkpoint's fingerprint hold
    [settings, the input's history, arch]: such a file is reused when those match, and is
    another request when its input's history differs (a retrained baseline)."""
    import json

    from deepcomp.resume import settings
    from deepcomp.stagefile import save_stage
    out = str(tmp_path / "m.dc")
    cfg = _config()
    compress(trained_lenet, digits, out, cfg, log=lambda *a: None)
    pruned = load_stage(str(tmp_path / "m.pruned.pt"))

    def keyed(basis):
        pruned.history[-1]["pipeline_key"] = json.dumps(
            [settings(cfg.prune.to_dict()), basis, trained_lenet.arch], sort_keys=True)
        save_stage(str(tmp_path / "m.pruned.pt"), pruned)

    keyed([(r.get("stage"), r.get("wall_time")) for r in trained_lenet.history])
    logs = []
    compress(trained_lenet, digits, out, _config(), log=logs.append)
    assert sum("resuming" in line for line in logs) == 2
    keyed([("baseline", 12.5)])                  # made from another input
    with pytest.raises(UsageError, match="m.pruned.pt exists and was not made by these"):
        compress(trained_lenet, digits, out, _config(), log=lambda *a: None)


def test_files_of_an_older_version_resume_while_new_settings_keep_their_defaults(
        trained_lenet, digits, tmp_path, monkeypatch):
    """A run started before a setting existed (include_bias here) resumes after an upgrade, both
    from a finished stage file and from a stage's checkpoint; the same setting not at its
    default is another request."""
    import json

    from deepcomp.stagefile import save_stage
    from deepcomp.resume import Stopped
    from conftest import stop_after
    out = str(tmp_path / "m.dc")
    compress(trained_lenet, digits, out, _config(), log=lambda *a: None)
    pruned = load_stage(str(tmp_path / "m.pruned.pt"))
    pruned.history[-1]["pipeline_key"] = json.dumps(
        _drop(json.loads(pruned.history[-1]["pipeline_key"]), "include_bias"), sort_keys=True)
    save_stage(str(tmp_path / "m.pruned.pt"), pruned)
    logs = []
    compress(trained_lenet, digits, out, _config(), log=logs.append)
    assert sum("resuming" in line for line in logs) == 2
    cfg = _config()
    cfg.prune.include_bias = True
    with pytest.raises(UsageError, match="m.pruned.pt exists and was not made by these"):
        compress(trained_lenet, digits, out, cfg, log=lambda *a: None)

    # a checkpoint inside the pruning, written by the older version
    out2 = str(tmp_path / "n.dc")
    with monkeypatch.context() as m:
        stop_after(m, 5)
        with pytest.raises(Stopped):
            compress(trained_lenet, digits, out2, _config(), log=lambda *a: None)
    ckpt = tmp_path / "n.pruned.pt.ckpt"
    obj = torch.load(ckpt, weights_only=True)
    obj["fingerprint"] = _drop(obj["fingerprint"], "include_bias")
    torch.save(obj, ckpt)
    logs = []
    compress(trained_lenet, digits, out2, _config(), log=logs.append)
    assert any(line.startswith("resuming from") for line in logs)
