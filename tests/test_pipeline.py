"""compress end to end on digits, its resumption, and the embedded demo."""
import torch

from deepcomp.cli import main
from deepcomp.decode import read_dc
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
    # a different request for the quantization redoes it, but keeps the pruning
    cfg = _config()
    cfg.quantize.bits = "*=4"
    logs = []
    compress(trained_lenet, digits, out, cfg, log=logs.append)
    assert sum("resuming" in line for line in logs) == 1
    assert load_stage(str(tmp_path / "m.quantized.pt")).quant["fc1.weight"]["bits"] == 4


def test_demo_prints_the_per_stage_table(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    for stage in ("baseline", "pruned", "quantized", "encoded"):
        assert f"\n{stage} " in out
    assert (tmp_path / "demo" / "lenet300-digits.dc").exists()
    assert main(["eval", str(tmp_path / "demo" / "lenet300-digits.dc")]) == 0
