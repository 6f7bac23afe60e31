"""Run by tests/test_distributed.py, once plainly and once under torchrun with 2 processes:
train, prune and quantize a small model on synthetic data and dump what each rank ends with."""
import sys

import torch

from deepcomp import dist
from deepcomp.data import load_data
from deepcomp.models import create
from deepcomp.prune import PruneConfig, prune
from deepcomp.quantize import QuantizeConfig, quantize
from deepcomp.stagefile import StageFile, arch_for
from deepcomp.train import TrainConfig, evaluate, fit

out = sys.argv[1]
data = load_data("synthetic")
torch.manual_seed(0)
arch = arch_for("lenet300", data.meta())
model = create(arch["name"], **arch["kwargs"])
cfg = TrainConfig(epochs=3, lr=0.05, batch_size=64, progress=False, device="cpu")
fit(model, data, cfg)
sf = StageFile.from_model(model, arch, data.meta())
pruned = prune(sf, data, PruneConfig(method="global", sparsity="0.8", retrain_epochs=1,
                                     train=TrainConfig(batch_size=64, progress=False, device="cpu")),
               log=lambda *a: None)
quantized = quantize(pruned, data, QuantizeConfig(
    finetune=TrainConfig(epochs=1, lr=1e-3, batch_size=64, progress=False, device="cpu")))
torch.save({"world_size": dist.world_size(),
            "masks": pruned.masks,
            "codebooks": {k: q["codebook"] for k, q in quantized.quant.items()},
            "state_dict": quantized.state_dict,
            "top1": evaluate(quantized.build_model(), data, "cpu")["top1"]},
           f"{out}/rank{dist.rank()}.pt")
dist.cleanup()
