import pytest
import torch

from deepcomp.errors import CheckpointError
from deepcomp.models import create
from deepcomp.loading import load_stage
from deepcomp.stagefile import save_stage


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "net", "model", "dataparallel"])
def test_foreign_checkpoint_layouts(tmp_path, wrap):
    model = create("lenet300", img_size=8)
    sd = model.state_dict()
    obj = {"dataparallel": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
           "bare": sd}.get(wrap, {wrap: sd, "epoch": 3})
    torch.save(obj, tmp_path / "ck.pt")
    sf = load_stage(str(tmp_path / "ck.pt"), model="lenet300",
                    data={"spec": "digits", "mean": [0.3], "std": [0.4], "input_size": [1, 8, 8],
                          "classes": list("0123456789"), "augment": "none"})
    for k, v in sd.items():
        assert torch.equal(sf.state_dict[k], v)


def test_mismatch_names_missing_and_unexpected_keys(tmp_path):
    sd = create("lenet300").state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["fc3.bias"]
    torch.save(sd, tmp_path / "ck.pt")
    with pytest.raises(CheckpointError) as e:
        load_stage(str(tmp_path / "ck.pt"), model="lenet300")
    msg = str(e.value)
    assert "missing keys: fc3.bias" in msg and "unexpected keys: extra.weight" in msg
    assert "\n" not in msg


def test_checkpoint_with_code_is_refused(tmp_path):
    torch.save({"state_dict": create("lenet300").state_dict(), "obj": torch.nn.ReLU()},
               tmp_path / "ck.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_stage(str(tmp_path / "ck.pt"), model="lenet300")


def test_stage_file_round_trip(tmp_path, trained_lenet):
    save_stage(tmp_path / "s.pt", trained_lenet)
    back = load_stage(str(tmp_path / "s.pt"))
    assert back.arch == trained_lenet.arch and back.data == trained_lenet.data
    assert all(torch.equal(back.state_dict[k], v) for k, v in trained_lenet.state_dict.items())
    # plain data only: loads with weights_only=True
    torch.load(tmp_path / "s.pt", weights_only=True)
