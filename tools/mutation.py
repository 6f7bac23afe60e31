"""Mutation testing of deepcomp's core: plant one small bug at a time, run the fast tests that
cover the module, and count the bugs they catch.

    python tools/mutation.py                          # every core module, up to 40 mutants each
    python tools/mutation.py --module dc/huffman --max 0   # every mutant of one module
    python tools/mutation.py --write docs/TESTING.md  # also write the score table there

A mutant is one change of the module's syntax tree inside a function: a comparison flipped
(``<`` to ``<=``, ``==`` to ``!=``), an arithmetic operator swapped (``+`` to ``-``, ``<<`` to
``>>``), a small integer constant moved by one, ``and`` for ``or``, a ``not`` dropped, an
augmented assignment reversed, or a statement that only calls or assigns removed. Each mutant
is written into a copy of the package (the checkout is never touched) and the module's tests
run against it with ``pytest -x``; a mutant is *killed* when they fail (or run past three times
their normal time), else it *survives*. Mutants are drawn with a fixed seed, so a run repeats.
The survivors are listed with their line: each is a test to write, or an equivalent mutant
(one that changes nothing observable) to explain in docs/TESTING.md.
"""
from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# module -> the fast tests that cover it (what a developer runs after touching it)
# (a module of deepcomp/dc/ is named with its folder: dc/huffman)
_READER = ["tests/test_dcfile.py", "tests/test_dcfile_fuzz.py", "tests/test_reader_limits.py"]
CORE = {
    "dc/huffman": ["tests/test_huffman.py"],
    "dc/sparse": ["tests/test_dcfile.py"],
    "prune": ["tests/test_prune.py", "tests/test_prune_schedules.py"],
    "quantize": ["tests/test_quantize.py", "tests/test_userloop.py"],
    "encode": ["tests/test_dcfile.py"],
    "dc/write": ["tests/test_dcfile.py"],
    "dc/read": _READER,
    "dc/format": _READER,
    "loading": _READER,
    "resume": ["tests/test_resume.py", "-k", "not signal"],     # the fast, in-process ones
}

_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
         ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn,
         ast.NotIn: ast.In,
         ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult,
         ast.Div: ast.Mult, ast.LShift: ast.RShift, ast.RShift: ast.LShift,
         ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd, ast.Mod: ast.FloorDiv,
         ast.And: ast.Or, ast.Or: ast.And}


@dataclass
class Mutant:
    module: str
    index: int            # which node, in ast.walk order
    kind: str             # what is changed
    line: int
    text: str             # the line as written, stripped


def _in_function(tree: ast.AST) -> set[int]:
    """ids of the nodes inside function bodies (not docstrings)."""
    inside = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = fn.body[1:] if (fn.body and isinstance(fn.body[0], ast.Expr)
                                   and isinstance(fn.body[0].value, ast.Constant)) else fn.body
            for stmt in body:
                inside.update(id(n) for n in ast.walk(stmt))
    return inside


def _points(tree: ast.AST):
    """(node index, kind) of every mutation point, in ast.walk order."""
    inside = _in_function(tree)
    for i, node in enumerate(ast.walk(tree)):
        if id(node) not in inside:
            continue
        if isinstance(node, ast.Compare):
            for j, op in enumerate(node.ops):
                if type(op) in _SWAP:
                    yield i, f"compare{j}:{type(op).__name__}->{_SWAP[type(op)].__name__}"
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _SWAP:
            yield i, f"op:{type(node.op).__name__}->{_SWAP[type(node.op)].__name__}"
        elif isinstance(node, ast.BoolOp):
            yield i, f"bool:{type(node.op).__name__}->{_SWAP[type(node.op)].__name__}"
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield i, "drop-not"
        elif isinstance(node, ast.Constant) and type(node.value) is int and -2 <= node.value <= 64:
            yield i, f"const:{node.value}->{node.value + 1}"
        elif isinstance(node, (ast.Expr, ast.Assign, ast.AugAssign)) and not (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            yield i, "drop-statement"


class _Apply(ast.NodeTransformer):
    def __init__(self, index: int, kind: str):
        self.index, self.kind, self.count = index, kind, -1
        self.order = None

    def mutate(self, tree):
        self.order = {id(n): i for i, n in enumerate(ast.walk(tree))}
        return ast.fix_missing_locations(self.visit(tree))

    def generic_visit(self, node):
        node = super().generic_visit(node)
        return node

    def visit(self, node):
        if self.order.get(id(node)) != self.index:
            return super().visit(node)
        kind = self.kind
        if kind.startswith("compare"):
            j = int(kind[len("compare"):kind.index(":")])
            node.ops[j] = _SWAP[type(node.ops[j])]()
        elif kind.startswith("op:") or kind.startswith("bool:"):
            node.op = _SWAP[type(node.op)]()
        elif kind == "drop-not":
            return node.operand
        elif kind.startswith("const:"):
            node.value = node.value + 1
        elif kind == "drop-statement":
            return ast.Pass()
        return node


def mutants(module: str) -> list[Mutant]:
    path = ROOT / "deepcomp" / f"{module}.py"
    src = path.read_text()
    lines = src.splitlines()
    tree = ast.parse(src)
    nodes = list(ast.walk(tree))
    out = []
    for i, kind in _points(tree):
        line = getattr(nodes[i], "lineno", 0)
        out.append(Mutant(module, i, kind, line, lines[line - 1].strip() if line else ""))
    return out


def mutated_source(m: Mutant) -> str:
    tree = ast.parse((ROOT / "deepcomp" / f"{m.module}.py").read_text())
    return ast.unparse(_Apply(m.index, m.kind).mutate(tree))


def _run_tests(tests: list[str], pkg_root: Path, timeout: float) -> tuple[bool, float]:
    """(passed, seconds) of the tests with ``pkg_root`` first on the path."""
    env = {**os.environ, "PYTHONPATH": f"{pkg_root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.perf_counter()
    # run from the copy's folder: `python -m` puts the working directory first on the path, so
    # the mutated package is the one imported (the tests are named by absolute path)
    tests = [str(ROOT / t) if t.startswith("tests/") else t for t in tests]
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                            "-p", "no:warnings", "--rootdir", str(ROOT), *tests], cwd=pkg_root,
                           env=env, timeout=timeout, capture_output=True, text=True)
        ok = r.returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    return ok, time.perf_counter() - t0


def _imports_the_copy(pkg_root: Path) -> bool:
    r = subprocess.run([sys.executable, "-c", "import deepcomp; print(deepcomp.__file__)"],
                       cwd=pkg_root, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(pkg_root)})
    return r.stdout.strip().startswith(str(pkg_root))


def run_module(module: str, limit: int, seed: int, log=print) -> dict:
    tests = CORE[module]
    with tempfile.TemporaryDirectory(prefix="deepcomp-mut-") as tmp:
        pkg = Path(tmp) / "deepcomp"
        shutil.copytree(ROOT / "deepcomp", pkg, ignore=shutil.ignore_patterns("__pycache__"))
        ok, base = _run_tests(tests, Path(tmp), timeout=1800)
        if not ok:
            raise SystemExit(f"mutation: {module}'s tests fail without a mutant: fix them first")
        if not _imports_the_copy(Path(tmp)):
            raise SystemExit("mutation: the tests would import the checkout, not the mutated copy")
        all_m = mutants(module)
        chosen = all_m if not limit or limit >= len(all_m) else \
            sorted(random.Random(seed).sample(all_m, limit), key=lambda m: (m.line, m.index))
        target = pkg / f"{module}.py"
        original = target.read_text()
        killed, survivors = 0, []
        log(f"{module}: {len(chosen)} of {len(all_m)} mutants, tests {base:.0f}s without one")
        for m in chosen:
            target.write_text(mutated_source(m))
            passed, secs = _run_tests(tests, Path(tmp), timeout=3 * base + 30)
            target.write_text(original)
            if passed:
                survivors.append(m)
                log(f"  SURVIVED {module}.py:{m.line} {m.kind}: {m.text[:80]}")
            else:
                killed += 1
        return {"module": module, "mutants": len(all_m), "tried": len(chosen), "killed": killed,
                "survivors": survivors}


def table(results: list[dict]) -> str:
    rows = ["| module | mutation points | mutants run | killed | survived | score |",
            "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        n = r["tried"]
        rows.append(f"| {r['module']} | {r['mutants']} | {n} | {r['killed']} | "
                    f"{len(r['survivors'])} | {100 * r['killed'] / max(n, 1):.0f}% |")
    lines = rows + ["", "Survivors:", ""]
    for r in results:
        for m in r["survivors"]:
            lines.append(f"- `{m.module}.py:{m.line}` {m.kind}: `{m.text[:90]}`")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--module", action="append", choices=sorted(CORE),
                    help="a core module (repeatable; default: all)")
    ap.add_argument("--max", type=int, default=40, help="mutants per module, drawn with the "
                    "seed (0: all) (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", metavar="MD", help="replace the table between the markers "
                    "'<!-- mutation -->' and '<!-- /mutation -->' in this file")
    a = ap.parse_args()
    t0 = time.perf_counter()
    results = [run_module(m, a.max, a.seed) for m in (a.module or list(CORE))]
    text = table(results)
    print(text)
    print(f"mutation: {time.perf_counter() - t0:.0f}s")
    if a.write:
        path = Path(a.write)
        doc = path.read_text()
        start, end = "<!-- mutation -->", "<!-- /mutation -->"
        if start not in doc or end not in doc:
            raise SystemExit(f"mutation: {path} has no {start} ... {end} markers")
        head, rest = doc.split(start, 1)
        path.write_text(head + start + "\n" + text + end + rest.split(end, 1)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
