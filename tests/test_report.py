"""The report's numbers against hand-computed examples, and each output format."""
import csv
import io
import json

import pytest
import torch

from deepcomp.report import (LAYER_COLUMNS, STAGE_COLUMNS, Inputs, layer_rows, render,
                             stage_rows)
from deepcomp.sizes import layer_sizes, stage_sizes
from deepcomp.stagefile import StageFile

ARCH = {"name": "lenet300", "kwargs": {}}
DATA = {"spec": "toy", "mean": [0.5], "std": [0.5], "input_size": [1, 2, 2], "classes": ["a", "b"]}


def test_equation_1_on_the_papers_toy_layer():
    """Han et al. 2016, eq. 1 and Figure 3: n=16 weights of b=32 bits shared by k=4 clusters:
    r = n*b / (n*log2(k) + k*b) = 512 / (32 + 128) = 3.2."""
    w = torch.tensor([[2.09, -0.98, 1.48, 0.09], [0.05, -0.14, -1.08, 2.12],
                      [-0.91, 1.92, 0.0, -1.03], [1.87, 0.0, 1.53, 1.49]])
    codebook = torch.tensor([-1.0, 0.0, 1.5, 2.0])
    idx = torch.tensor([[3, 0, 2, 1], [1, 1, 0, 3], [0, 3, 1, 0], [3, 1, 2, 2]], dtype=torch.int16)
    assert torch.equal((w[..., None] - codebook).abs().argmin(-1), idx.long())   # the paper's clusters
    sf = StageFile(ARCH, DATA, {"fc.weight": codebook[idx.long()], "fc.bias": torch.zeros(4)},
                   quant={"fc.weight": {"codebook": codebook, "indices": idx, "bits": 2}})
    (row,) = layer_sizes(sf)
    assert row["bits"] == 16 * 2 + 4 * 32
    assert row["ratio"] == pytest.approx(3.2)
    z = stage_sizes(sf)
    assert z["dense_bytes"] == (16 + 4) * 4
    assert z["bytes"] == (160 + 4 * 32) // 8              # the bias stays 32-bit


def test_relative_indices_with_fillers_on_a_toy_layer():
    """Kept positions 0, 3, 12 of a 1x20 row with 2-bit indices (gaps up to 4): the gap of 9
    needs two filler entries (paper, Figure 2), so 5 entries of 3 + 2 bits, plus 8 centroids."""
    mask = torch.zeros(1, 20, dtype=torch.bool)
    mask[0, [0, 3, 12]] = True
    w = torch.zeros(1, 20)
    w[mask] = torch.tensor([0.5, -0.5, 0.25])
    sf = StageFile(ARCH, DATA, {"fc.weight": w}, masks={"fc.weight": mask},
                   quant={"fc.weight": {"codebook": torch.linspace(-1, 1, 8), "bits": 3,
                                        "indices": torch.zeros(1, 20, dtype=torch.int16)}})
    (row,) = layer_sizes(sf, index_bits={"fc.weight": 2})
    assert row["entries"] == 5 and row["kept"] == 3
    assert row["bits"] == 5 * (3 + 2) + 8 * 32


def _history():
    def rec(stage, top1, nbytes, **z):
        return {"stage": stage, "metrics": {"top1": top1, "top5": 99.0},
                "sizes": {"params": 1000, "dense_bytes": 4000, "bytes": nbytes,
                          "ratio": 4000 / nbytes, "nonzero_share": z.get("nz", 1.0), **z},
                "wall_time": 1.5, "command": f"deepcomp {stage} x"}
    return [rec("baseline", 98.0, 4000), rec("pruned", 97.5, 800, nz=0.1),
            rec("quantized", 97.25, 250, nz=0.1),
            rec("encoded", 97.25, 200, nz=0.1,
                tensors={"fc.weight": {"entries": 100, "weight_bits": 3.5, "index_bits": 2.5,
                                       "bytes": 150}})]


def _inputs():
    w = torch.zeros(10, 10)
    sf = StageFile(ARCH, DATA, {"fc.weight": w}, masks={"fc.weight": torch.ones(10, 10, dtype=torch.bool)},
                   history=_history())
    return Inputs([("x.dc", sf)], sf.history)


def test_stage_rows():
    rows = stage_rows(_inputs())
    assert [r["stage"] for r in rows] == ["baseline", "pruned", "quantized", "encoded"]
    assert [r["ratio"] for r in rows] == [1.0, 5.0, 16.0, 20.0]
    assert rows[2]["delta_top1"] == pytest.approx(-0.75)
    assert rows[3]["weight_bits"] == "3.50" and rows[3]["index_bits"] == "2.50"
    inp = _inputs()
    inp.records[-1]["lossy"] = True
    assert stage_rows(inp)[3]["stage"] == "encoded (float16, lossy)"    # a file from before
    inp.records[-1]["lossy"] = "folded batch norm, float16"
    assert stage_rows(inp)[3]["stage"] == "encoded (folded batch norm, float16, lossy)"


def test_layer_rows_use_the_encoded_record():
    (row,) = layer_rows(_inputs())
    assert row["wbits_pqh"] == 3.5 and row["ibits_pqh"] == 2.5
    assert row["rate_pqh"] == pytest.approx(32 * 100 / (8 * 150))


@pytest.mark.parametrize("fmt", ["text", "markdown", "csv", "json"])
def test_formats(fmt):
    rows = stage_rows(_inputs())
    out = render(rows, STAGE_COLUMNS, fmt)
    if fmt == "json":
        assert json.loads(out)[1]["ratio"] == 5.0
    elif fmt == "csv":
        parsed = list(csv.DictReader(io.StringIO(out)))
        assert parsed[3]["stage"] == "encoded" and float(parsed[3]["ratio"]) == 20.0
        assert parsed[1]["command"] == "deepcomp pruned x"
    elif fmt == "markdown":
        lines = out.splitlines()
        assert lines[0].startswith("| stage |") and lines[1].startswith("|---|")
        assert "| pruned | 1,000 | 10.00% |" in out and "`deepcomp pruned x`" in out
    else:
        assert "20.0x" in out and "-0.75" in out and "deepcomp encoded x" in out
    layers = render(layer_rows(_inputs()), LAYER_COLUMNS, fmt)
    rate = 32 * 100 / (8 * 150)                      # 2.666...: shown as 2.7x, kept as 2.67
    if fmt == "json":
        (row,) = json.loads(layers)
        assert row == {"layer": "fc", "weights": 100, "kept": 1.0, "wbits_pq": 32,
                       "wbits_pqh": 3.5, "ibits_pq": 5, "ibits_pqh": 2.5,
                       "rate_pq": row["rate_pq"], "rate_pqh": round(rate, 2),
                       "macs": None, "macs_kept": None}   # the toy model does not build
    elif fmt == "csv":
        (row,) = csv.DictReader(io.StringIO(layers))
        assert row["layer"] == "fc" and row["rate_pqh"] == "2.67" and row["wbits_pqh"] == "3.5"
    else:
        assert "fc" in layers and "2.7x" in layers and "3.50" in layers


def test_machine_formats_round_floats_as_displayed():
    inp = _inputs()
    inp.records[1]["metrics"]["top1"] = 46.120000000000005
    text = render(stage_rows(inp), STAGE_COLUMNS, "csv")
    assert "46.12," in text and "46.120000000000005" not in text


def test_json_report_is_one_document_and_csv_one_table():
    from deepcomp.report import report_text
    doc = json.loads(report_text(_inputs(), "json", layers=True))
    assert doc["model"] == "lenet300" and [r["stage"] for r in doc["stages"]] == \
        ["baseline", "pruned", "quantized", "encoded"]
    assert doc["layers"][0]["layer"] == "fc"
    for layers, first in ((False, "stage"), (True, "layer")):
        rows = list(csv.reader(io.StringIO(report_text(_inputs(), "csv", layers=layers))))
        assert rows[0][0] == first and all(len(r) == len(rows[0]) for r in rows)


def test_layer_rows_count_dense_and_kept_multiply_accumulates():
    """LeNet-5 on 28x28 inputs: conv1 makes 24x24 outputs of 20x1x5x5 weights, conv2 8x8 of
    50x20x5x5; the linear layers one output position each. Pruned, only the kept weights
    count."""
    from deepcomp.models import create
    model = create("lenet5")
    masks = {n: torch.rand_like(p) < 0.25 for n, p in model.named_parameters() if p.ndim > 1}
    data = dict(DATA, input_size=[1, 28, 28], classes=[str(i) for i in range(10)])
    sf = StageFile({"name": "lenet5", "kwargs": {}}, data,
                   {k: (v * masks[k]) if k in masks else v for k, v in model.state_dict().items()},
                   masks=masks, history=_history())
    rows = {r["layer"]: r for r in layer_rows(Inputs([("x.pt", sf)], sf.history))}
    assert rows["conv1"]["macs"] == 24 * 24 * 500 and rows["conv2"]["macs"] == 8 * 8 * 25_000
    assert rows["fc1"]["macs"] == 400_000 and rows["fc2"]["macs"] == 5_000
    assert rows["conv2"]["macs_kept"] == 8 * 8 * int(masks["conv2.weight"].sum())
    assert rows["total"]["macs"] == sum(rows[n]["macs"] for n in ("conv1", "conv2", "fc1", "fc2"))
    assert rows["total"]["macs_kept"] == sum(rows[n]["macs_kept"]
                                             for n in ("conv1", "conv2", "fc1", "fc2"))
