"""Data-parallel runs under torchrun: 2 gloo processes on the CPU."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


def _torchrun(*args, cwd=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
           "--nproc_per_node=2", *map(str, args)]
    env = dict(os.environ, PYTHONFAULTHANDLER="1")    # a crashing rank shows its Python stack
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    single, multi = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("ddp")
    subprocess.run([sys.executable, str(WORKER), str(single)], check=True, timeout=300)
    _torchrun(WORKER, multi)
    load = lambda p: torch.load(p, weights_only=True)  # noqa: E731
    return load(single / "rank0.pt"), [load(multi / f"rank{r}.pt") for r in (0, 1)]


def test_ranks_end_with_identical_masks_codebooks_and_weights(runs):
    _, (r0, r1) = runs
    assert r0["world_size"] == r1["world_size"] == 2
    for key in ("masks", "codebooks", "state_dict"):
        assert r0[key].keys() == r1[key].keys()
        for name in r0[key]:
            assert torch.equal(r0[key][name], r1[key][name]), (key, name)
    assert r0["top1"] == r1["top1"]          # metrics are reduced across ranks


def test_accuracy_matches_a_single_process_run(runs):
    single, (r0, _) = runs
    assert single["world_size"] == 1
    assert abs(single["top1"] - r0["top1"]) <= 3.0    # same total batch; data order differs


def test_torchrun_cli_writes_one_valid_file(tmp_path):
    r = _torchrun("-m", "deepcomp", "train", "--model", "lenet300", "--data", "synthetic",
                  "--epochs", "2", "--lr", "0.05", "--device", "cpu", "-o", tmp_path / "m.pt")
    assert r.stdout.count("top-1") == 1            # only rank 0 prints
    _torchrun("-m", "deepcomp", "prune", tmp_path / "m.pt", "--method", "global",
              "--sparsity", "0.5", "--retrain-epochs", "1", "-o", tmp_path / "p.pt")
    from deepcomp.loading import load_stage
    sf = load_stage(str(tmp_path / "p.pt"))
    assert sf.history[-1]["stage"] == "pruned"
    assert abs(sf.history[-1]["sizes"]["nonzero_share"] - 0.5) < 1e-3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "p.pt"]   # no temp files left


def test_a_rank_signalled_alone_stops_every_rank_which_then_resume_exactly(tmp_path):
    _torchrun(WORKER.with_name("ddp_resume_worker.py"), tmp_path)
    r0, r1 = (torch.load(tmp_path / f"resume{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["stopped"] == r1["stopped"] == "stopped at round 1/1, epoch 1, step 5; run the " \
                                             "same command to resume"
    assert r0["equal"] and r1["equal"]
