"""deepcomp inside a user's own training loop (deepcomp.userloop), and models pruned with
torch.nn.utils.prune."""
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import prune as tprune

import deepcomp
from deepcomp.cli import main
from deepcomp.loading import read_dc
from deepcomp.loading import load_stage
from deepcomp.torchprune import to_torch_prune


def _batches(digits, n=8, size=128):
    x = (digits.train_x.float() / 255 - torch.tensor(digits.mean).view(1, -1, 1, 1)) / \
        torch.tensor(digits.std).view(1, -1, 1, 1)
    g = torch.Generator().manual_seed(0)
    for _ in range(n):
        i = torch.randint(0, len(x), (size,), generator=g)
        yield x[i], digits.train_y[i]


def _train(model, opt, digits, n=8, after=None):
    model.train()
    for x, y in _batches(digits, n):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if after is not None:
            after()


def _zeros_exact(model, masks):
    params = dict(model.named_parameters())
    for n, m in masks.items():
        w = params[n].detach()
        assert torch.equal(w[~m], torch.zeros_like(w[~m])), n


def test_the_api_in_a_hand_written_loop_with_adam(trained_lenet, digits, tmp_path):
    """Masks held through Adam (its state from before pruning included), codebooks trained in
    the same loop, and a .dc file that decodes to the model bit for bit."""
    model = trained_lenet.build_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _train(model, opt, digits, 4)                        # Adam's moments from before pruning
    masks = deepcomp.prune_masks(model, method="global", sparsity=0.8)
    assert abs(sum(int((~m).sum()) for m in masks.values()) /
               sum(m.numel() for m in masks.values()) - 0.8) < 1e-3
    handle = deepcomp.apply_masks(model, masks, opt)
    _train(model, opt, digits, 8, after=lambda: _zeros_exact(model, masks))
    assert abs(handle.sparsity - 0.8) < 1e-3
    codebooks = deepcomp.share_weights(model, bits=4)
    before = [c.detach().clone() for c in codebooks.parameters()]
    copt = torch.optim.Adam(codebooks.parameters(), lr=1e-3)
    _train(model, copt, digits, 4)
    assert any(not torch.equal(b, c.detach()) for b, c in zip(before, codebooks.parameters()))
    quant = codebooks.finalize()
    _zeros_exact(model, masks)
    out = tmp_path / "m.dc"
    deepcomp.encode(model, str(out))
    back = read_dc(str(out))
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict[k], v), k
    assert all(torch.equal(back.masks[n], masks[n]) for n in masks)
    assert all(len(q["codebook"]) <= 16 and torch.equal(back.quant[n]["codebook"], q["codebook"])
               for n, q in quant.items())


def test_a_gradual_schedule_stepped_by_the_user_hits_its_target(trained_lenet, digits):
    model = trained_lenet.build_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    schedule = deepcomp.GradualSchedule(model, total_steps=40, method="lamp", sparsity=0.9,
                                        every=5, optimizer=opt)
    sparsities = []

    def after():
        schedule.step()
        sparsities.append(schedule.sparsity)
        _zeros_exact(model, schedule.keeper.masks)
    _train(model, opt, digits, 40, after=after)
    assert sparsities == sorted(sparsities) and sparsities[0] < 0.5   # along the ramp
    once = deepcomp.prune_masks(trained_lenet.build_model(), method="lamp", sparsity=0.9)
    assert sum(int(m.sum()) for m in schedule.masks.values()) == \
        sum(int(m.sum()) for m in once.values())                     # the target, exactly
    masks = schedule.remove()
    assert all(torch.equal(masks[n], schedule.masks[n]) for n in masks)


def _torch_pruned(trained_lenet):
    model = trained_lenet.build_model()
    tprune.l1_unstructured(model.fc1, "weight", amount=0.7)
    tprune.random_unstructured(model.fc2, "weight", amount=0.5)
    return model


def test_a_model_pruned_with_torch_prune_keeps_its_sparsity_through_quantize_and_encode(
        trained_lenet, tmp_path, capsys):
    model = _torch_pruned(trained_lenet)
    torch_masks = {"fc1.weight": model.fc1.weight_mask.bool(),
                   "fc2.weight": model.fc2.weight_mask.bool()}
    torch.save(model.state_dict(), tmp_path / "pruned.pt")       # weight_orig, weight_mask
    assert main(["quantize", str(tmp_path / "pruned.pt"), "--model", "lenet300",
                 "--model-kwargs", '{"img_size": 8}', "--data", "digits", "--bits", "*=4",
                 "--finetune-epochs", "0", "-o", str(tmp_path / "q.pt")]) == 0
    q = load_stage(str(tmp_path / "q.pt"))
    assert set(q.masks) == set(torch_masks)
    assert all(torch.equal(q.masks[n], m) for n, m in torch_masks.items())
    assert main(["encode", str(tmp_path / "q.pt"), "-o", str(tmp_path / "q.dc")]) == 0
    back = read_dc(str(tmp_path / "q.dc"))
    assert all(torch.equal(back.masks[n], m) for n, m in torch_masks.items())
    # the Python API takes the pruned module itself, reparametrization and all
    deepcomp.encode(model, str(tmp_path / "api.dc"))
    api = read_dc(str(tmp_path / "api.dc"))
    assert all(torch.equal(api.masks[n], m) for n, m in torch_masks.items())
    assert torch.equal(api.state_dict["fc1.weight"], model.fc1.weight.detach())
    assert tprune.is_pruned(model)                            # the user's model is untouched


def test_our_masks_go_to_torch_prune(trained_lenet):
    model = trained_lenet.build_model()
    masks = deepcomp.prune_masks(model, method="layer", sparsity={"*": 0.6, "last": 0.2})
    to_torch_prune(model, masks)
    assert tprune.is_pruned(model)
    for n, m in masks.items():
        mod = dict(model.named_modules())[n.rpartition(".")[0]]
        assert torch.equal(mod.weight_mask.bool(), m)
        assert torch.equal(mod.weight.detach() == 0, ~m | (mod.weight_orig.detach() == 0))


def test_bad_arguments_are_named(trained_lenet):
    model = trained_lenet.build_model()
    with pytest.raises(deepcomp.errors.UsageError, match="unknown pruning method"):
        deepcomp.prune_masks(model, method="magic")
    with pytest.raises(deepcomp.errors.UsageError, match="matches no layer"):
        deepcomp.prune_masks(model, method="layer", sparsity={"nope": 0.5, "*": 0.5})
    with pytest.raises(deepcomp.errors.UsageError, match="does not have"):
        deepcomp.apply_masks(model, {"conv9.weight": torch.ones(3, dtype=torch.bool)})


def test_decode_to_safetensors_equals_the_pt_output(trained_lenet, tmp_path, capsys):
    from safetensors.torch import load_file
    model = trained_lenet.build_model()
    deepcomp.apply_masks(model, deepcomp.prune_masks(model, sparsity=0.7))
    deepcomp.encode(model, str(tmp_path / "m.dc"))
    assert main(["decode", str(tmp_path / "m.dc"), "-o", str(tmp_path / "m.safetensors")]) == 0
    assert main(["decode", str(tmp_path / "m.dc"), "-o", str(tmp_path / "m.pt")]) == 0
    assert "safetensors.torch.load_file" in capsys.readouterr().out
    st = load_file(str(tmp_path / "m.safetensors"))
    pt = torch.load(tmp_path / "m.pt", weights_only=True)
    assert st.keys() == pt.keys() and all(torch.equal(st[k], pt[k]) for k in pt)
    assert all(st[k].dtype == pt[k].dtype for k in pt)


def test_pruned_layers_as_scipy_sparse_matrices(trained_lenet, tmp_path):
    model = trained_lenet.build_model()
    masks = deepcomp.prune_masks(model, sparsity=0.8)
    deepcomp.apply_masks(model, masks)
    deepcomp.encode(model, str(tmp_path / "m.dc"))
    sd = deepcomp.decode(str(tmp_path / "m.dc"), sparse=True)
    w = sd["fc1.weight"]
    assert w.format == "csr" and w.shape == tuple(model.fc1.weight.shape)
    assert w.nnz == int(masks["fc1.weight"].sum())
    assert (w.toarray() == model.fc1.weight.detach().numpy()).all()
    x = torch.randn(5, w.shape[1])
    assert torch.allclose(torch.from_numpy(w @ x.numpy().T).T.float(),
                          x @ model.fc1.weight.detach().T, atol=1e-5)
    assert isinstance(sd["fc1.bias"], torch.Tensor)
