"""The layers of docs/ARCHITECTURE.md, kept true: no import circle between deepcomp's modules
(imports at any level, those inside functions too), every import from the module's own layer
or a lower one, and the file format, ``deepcomp.dc``, with numpy and the standard library
only: it imports no torch, and reads a file without it."""
import ast
import hashlib
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENET = os.path.join(ROOT, "models", "lenet300-mnist.dc")


def package_modules() -> dict:
    """``{module name: path}`` of every module of the deepcomp package."""
    out = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "deepcomp")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[name.removesuffix(".__init__")] = path
    return out


def imported(name: str, path: str, modules: dict) -> set:
    """The deepcomp modules that ``name`` imports, anywhere in it: ``from .a import b`` is the
    module ``a.b`` where that is one, else ``a``."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "deepcomp"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] == "deepcomp":
                out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                        for a in node.names}
    return out - {name}


def import_graph() -> dict:
    modules = package_modules()
    return {name: imported(name, path, modules) & set(modules) for name, path in modules.items()}


def circles(graph: dict) -> list:
    """Per group of modules that import each other (Tarjan's strongly connected components):
    (a circle through them, as a list of modules, the group's other modules)."""
    index, low, stack, on, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted((path, sorted(g - set(path))) for g in groups for path in [_path(graph, g)])


def _path(graph: dict, group: set) -> list:
    """A circle through the first module of ``group``, by breadth-first search within it."""
    start = min(group)
    prev, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return path[::-1]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError("a strongly connected group holds a circle")


def test_the_circle_finder_names_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(graph) == [(["a", "b", "c"], [])]
    assert circles({"a": {"b"}, "b": set()}) == []
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": {"b"}, "x": {"y"}, "y": {"x"}}
    assert circles(graph) == [(["a", "b"], ["c"]), (["x", "y"], [])]


def test_no_import_circles():
    def short(ms):
        return [m.removeprefix("deepcomp.") for m in ms]
    found = [" -> ".join(short(path + path[:1])) + (f" (with {', '.join(short(rest))})" if rest
                                                     else "")
             for path, rest in circles(import_graph())]
    assert not found, "import circles: " + "; ".join(found)


# docs/ARCHITECTURE.md's layers: a module imports from its own layer and those below.
LAYERS = [
    ["errors", "_version", "dist", "patterns", "checks"],
    ["dc", "dc.format", "dc.write", "dc.read", "dc.huffman", "dc.sparse", "dc.graph"],
    ["data", "models", "models._registry", "models.lenet", "models.resnet",
     "models.resnet_cifar", "models.torchvision_models", "torchprune", "stagefile", "sizes",
     "graph", "loading", "resume", "train"],
    ["masks", "prune", "allocate", "quantize", "encode", "analysis", "userloop"],
    ["pipeline", "search", "report", "plots", "export"],
    ["cli", "__main__"],
]


def test_every_module_imports_from_its_layer_or_below():
    layer = {f"deepcomp.{m}": i for i, ms in enumerate(LAYERS) for m in ms}
    graph = import_graph()
    unplaced = sorted(set(graph) - set(layer) - {"deepcomp"})
    assert not unplaced, f"modules docs/ARCHITECTURE.md does not place: {unplaced}"
    up = [f"{m} (layer {layer[m]}) imports {d} (layer {layer[d]})"
          for m in sorted(graph) if m in layer for d in sorted(graph[m]) if layer[d] > layer[m]]
    assert not up, "imports from a higher layer: " + "; ".join(up)
    assert graph["deepcomp"] <= {"deepcomp._version"}       # the rest on first use (PEP 562)
    doc = open(os.path.join(ROOT, "docs", "ARCHITECTURE.md")).read()
    for ms in LAYERS:
        for m in ms:
            if "." not in m or m.startswith("dc."):
                assert f"`{m}`" in doc, f"docs/ARCHITECTURE.md does not name {m}"


def test_the_format_imports_numpy_the_standard_library_and_errors_only():
    allowed = set(sys.stdlib_module_names) | {"numpy", "__future__"}
    for name, path in package_modules().items():
        if not (name == "deepcomp.dc" or name.startswith("deepcomp.dc.")):
            continue
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if isinstance(node, ast.Import):
                bad = [a.name for a in node.names if a.name.split(".")[0] not in allowed]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                bad = [node.module] if node.module.split(".")[0] not in allowed else []
            elif isinstance(node, ast.ImportFrom):       # relative: within deepcomp.dc, or errors
                bad = [] if node.level == 1 or node.module == "errors" else [node.module]
            else:
                continue
            assert not bad, f"{path}:{node.lineno} imports {bad}"


def _run(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_importing_the_format_imports_no_torch():
    out = _run("import sys, deepcomp.dc, deepcomp.dc.read, deepcomp.dc.write; "
               "print(sorted(m for m in sys.modules if m.split('.')[0] in "
               "('torch', 'scipy', 'sklearn', 'matplotlib', 'safetensors')))")
    assert out.strip() == "[]"


def _digest(a: np.ndarray | None) -> str | None:
    return None if a is None else hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_a_file_reads_with_the_format_alone_as_with_torch():
    """models/lenet300-mnist.dc read by deepcomp.dc in a process without torch: the same
    tensors (as float64), masks and cluster indices as deepcomp.loading's reader gives."""
    code = f"""
import hashlib, json, sys
import numpy as np
import deepcomp.dc as dc
f = dc.read_file({LENET!r})
def digest(a):
    return None if a is None else hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
print(json.dumps({{"torch": "torch" in sys.modules, "arch": f.header["arch"]["name"],
    "tensors": [[n, t.dtype, list(t.shape), digest(t.array.astype("<f8")), digest(t.mask),
                 digest(None if t.quant is None else t.quant["indices"])]
                for n, t in f.tensors.items()]}}))
"""
    got = json.loads(_run(code))
    from deepcomp.loading import read_dc
    sf = read_dc(LENET)
    want = [[n, str(v.dtype).removeprefix("torch."), list(v.shape),
             _digest(v.double().numpy().astype("<f8")),
             _digest(sf.masks[n].numpy()) if n in sf.masks else None,
             _digest(sf.quant[n]["indices"].numpy()) if n in sf.quant else None]
            for n, v in sf.state_dict.items()]
    assert not got["torch"] and got["arch"] == "lenet300"
    assert got["tensors"] == sorted(want)      # without the model, in name order
