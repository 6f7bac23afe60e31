"""Bring a model pruned with torch.nn.utils.prune: deepcomp keeps its masks, shares its weights
and writes the .dc file; the sparsity you paid for is the sparsity stored.

    python examples/torch_prune.py [OUT_DIR]

The same file works from the command line: a state dict saved with weight_orig and weight_mask
(`torch.save(model.state_dict(), "pruned.pt")`) is read as pruned weights and masks by every
command, e.g. `deepcomp quantize pruned.pt --model YOUR.module:Factory --data ... -o q.pt`.
"""
import os
import sys

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.nn.utils import prune

import deepcomp
from deepcomp.loading import read_dc

out_dir = sys.argv[1] if len(sys.argv) > 1 else "."
torch.manual_seed(0)
digits = load_digits()
x = torch.tensor(digits.images, dtype=torch.float32).reshape(-1, 64) / 16
y = torch.tensor(digits.target)
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
for _ in range(20):
    for i in torch.randperm(1400).split(64):
        loss = F.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()

# your pruning, with PyTorch's own tools
prune.global_unstructured([(model[0], "weight"), (model[2], "weight")],
                          pruning_method=prune.L1Unstructured, amount=0.85)
kept = {n: int(m.sum()) for n, m in (("0.weight", model[0].weight_mask),
                                     ("2.weight", model[2].weight_mask))}
print(f"torch.nn.utils.prune kept {kept} weights")

# deepcomp: 5-bit shared weights for the kept ones, then the file
codebooks = deepcomp.share_weights(model, bits=5)         # masks read from weight_mask
codebooks.finalize()
path = os.path.join(out_dir, "torch_prune.dc")
record = deepcomp.encode(model, path)
back = read_dc(path)
stored = {n: int(m.sum()) for n, m in back.masks.items()}
print(f"{path}: {record['sizes']['bytes']:,} bytes; kept weights stored {stored}")
assert stored == kept, "the sparsity changed"
# Expected output (2026-12-04, torch 2.13 CPU):
#   torch.nn.utils.prune kept {'0.weight': 912, '2.weight': 509} weights
#   ./torch_prune.dc: 2,500 bytes; kept weights stored {'0.weight': 912, '2.weight': 509}
