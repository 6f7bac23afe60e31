"""tools/studies.py: each study runs end to end on a small model and writes what docs/STUDIES.md
shows (a CSV, a Markdown table with the commands, a plot), and a second run reuses finished steps."""
import csv
import importlib.util
import os
from pathlib import Path

import pytest

from deepcomp.stagefile import save_stage

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("studies", ROOT / "tools" / "studies.py")
studies = importlib.util.module_from_spec(spec)
spec.loader.exec_module(studies)


@pytest.fixture(scope="module")
def base(trained_lenet, tmp_path_factory):
    path = tmp_path_factory.mktemp("studies") / "base.pt"
    save_stage(str(path), trained_lenet)
    return path


def run(study, base, tmp_path, *extra):
    docs, runs = tmp_path / "docs", tmp_path / "runs"
    argv = [study, "--base", str(base), "--data", "digits", "--runs", str(runs), "--docs",
            str(docs), "--quiet", *extra]
    assert studies.main(argv) == 0
    with open(docs / f"{study}.csv") as f:
        rows = list(csv.DictReader(f))
    text = (docs / f"{study}.md").read_text()
    assert (docs / f"{study}.png").stat().st_size > 1000
    assert "deepcomp " in text and f"![{study}]" in text
    # the study's own command is recorded as given: what it ran on, how small it was made
    assert f"by `python tools/studies.py {study} --base {base} --data digits" in text
    return rows, text, runs, argv


def test_schemes(base, tmp_path):
    rows, text, runs, argv = run("schemes", base, tmp_path, "--grid", "0.9", "--epochs", "1")
    assert [float(r["sparsity"]) for r in rows] == [0.9]
    # retraining recovers what pruning alone lost
    assert float(rows[0]["masked_retrain"]) > float(rows[0]["layer_threshold"])
    assert float(rows[0]["freeze_retrain"]) > 50
    assert "| 0.9 |" in text and "--retrain freeze" in text and "--include-bias" in text
    # a second run finds every step done: nothing is rerun
    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("*.pt")}
    assert studies.main(argv) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in runs.rglob("*.pt")}


def test_layer_sweep(base, tmp_path):
    rows, text, _, _ = run("layer-sweep", base, tmp_path, "--grid", "0,0.5,0.9")
    assert [r["layer"] for r in rows] == ["fc1", "fc2", "fc3"]
    for r in rows:
        assert 0 <= float(r["free_within_1"]) <= 0.9
        assert float(r["free_within_0.5"]) <= float(r["free_within_1"])


def test_sensitivity(base, tmp_path):
    rows, text, _, _ = run("sensitivity", base, tmp_path, "--grid", "0,0.5,0.9", "--epochs", "1")
    sizes = {r["layer"]: (float(r["sparsity"]), int(r["weights"])) for r in rows}
    overall = sum(s * n for s, n in sizes.values()) / sum(n for _, n in sizes.values())
    assert overall == pytest.approx(0.9, abs=0.01)        # the allocation meets the target
    assert "--method layer --sparsity 'fc1=" in text
    assert os.path.exists(tmp_path / "docs" / "sensitivity-plots" / "weights_histogram.png")


def test_oneshot_iterative(base, tmp_path):
    rows, text, runs, _ = run("oneshot-iterative", base, tmp_path, "--grid", "0.8",
                              "--seeds", "0,1", "--epochs", "3")
    assert len(rows) == 1 and float(rows[0]["sparsity"]) == 0.8
    assert sorted(p.name for p in runs.rglob("*.pt")) == [
        "iterative-80-0.pt", "iterative-80-1.pt", "oneshot-80-0.pt", "oneshot-80-1.pt"]
    assert float(rows[0]["oneshot_spread"]) >= 0 and float(rows[0]["iterative"]) > 50
    with pytest.raises(SystemExit, match="does not split"):
        studies.main(["oneshot-iterative", "--base", str(base), "--data", "digits", "--runs",
                      str(tmp_path / "r2"), "--docs", str(tmp_path / "d2"), "--epochs", "4"])
