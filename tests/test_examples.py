"""Every script in examples/ runs as a user would run it, and says what it promises."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def run(script, *args, cwd):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *args],
                       capture_output=True, text=True, cwd=cwd, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_own_loop(tmp_path):
    out = run("own_loop.py", str(tmp_path), cwd=tmp_path)
    assert "pruned to 90.0% sparsity" in out and "restored from the file, weight for weight" in out
    assert (tmp_path / "own_loop.dc").exists()


def test_torch_prune(tmp_path):
    out = run("torch_prune.py", str(tmp_path), cwd=tmp_path)
    assert "kept weights stored" in out and (tmp_path / "torch_prune.dc").exists()


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler")
def test_deploy(tmp_path):
    out = run("deploy.py", os.path.join(ROOT, "models", "lenet300-mnist.dc"), str(tmp_path),
              cwd=tmp_path)
    assert "C reader: 6 tensors decoded" in out
    if shutil.which("onnxruntime") or _has("onnxruntime"):
        assert (tmp_path / "model.onnx").exists()


def _has(module):
    import importlib.util
    return importlib.util.find_spec(module) is not None
