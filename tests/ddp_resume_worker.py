"""Run by tests/test_distributed.py under torchrun with 2 processes: a pruning run that one rank
alone is signalled to stop, then resumed, against a run that never stopped."""
import signal
import sys

import torch

from deepcomp import dist, resume
from deepcomp.data import load_data
from deepcomp.models import create
from deepcomp.prune import PruneConfig, prune
from deepcomp.resume import Checkpoint, Stopped, fingerprint
from deepcomp.stagefile import StageFile, arch_for
from deepcomp.train import TrainConfig, fit

out = sys.argv[1]
data = load_data("synthetic")
torch.manual_seed(0)
arch = arch_for("lenet300", data.meta())
model = create(arch["name"], **arch["kwargs"])
train = TrainConfig(epochs=1, lr=0.05, batch_size=64, progress=False, device="cpu")
fit(model, data, train)
sf = StageFile.from_model(model, arch, data.meta())
cfg = PruneConfig(method="global", sparsity="0.8", retrain_epochs=2, train=train)
ref = prune(sf, data, cfg, log=lambda *a: None)


def ckpt():
    return Checkpoint(f"{out}/p.pt.ckpt", fingerprint("prune", cfg.to_dict(), sf, data.spec),
                      log=lambda *a: None)


real, calls = resume.stop_requested, [0]


def signalled_on_rank_1():
    calls[0] += 1
    if dist.rank() == 1 and calls[0] == 6:
        resume._state["signum"] = signal.SIGTERM
    return real()


resume.stop_requested = signalled_on_rank_1
stopped = ""
try:
    prune(sf, data, cfg, log=lambda *a: None, checkpoint=ckpt())
except Stopped as e:
    stopped = str(e)
resume.stop_requested, resume._state["signum"] = real, None
res = prune(sf, data, cfg, log=lambda *a: None, checkpoint=ckpt())
torch.save({"stopped": stopped,
            "equal": all(torch.equal(res.state_dict[k], v) for k, v in ref.state_dict.items())
            and all(torch.equal(res.masks[k], v) for k, v in ref.masks.items())},
           f"{out}/resume{dist.rank()}.pt")
dist.cleanup()
