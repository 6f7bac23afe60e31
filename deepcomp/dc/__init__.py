"""The ``.dc`` file format (docs/FORMAT.md), as a package of its own: bytes and numpy arrays,
never torch, like safetensors' format code (the C reader in c/ reads the same bytes).

- :mod:`~deepcomp.dc.format`: constants, the prefix, the header schema and its checks, caps
- :mod:`~deepcomp.dc.write`: a file from numpy arrays, sections in the format's order
- :mod:`~deepcomp.dc.read`: a file back into numpy arrays, checked
- :mod:`~deepcomp.dc.huffman`: canonical Huffman codes of symbol streams
- :mod:`~deepcomp.dc.sparse`: the gap codec of sparse positions
- :mod:`~deepcomp.dc.graph`: the schema of a file's graph (format 2.1)

It imports numpy, the standard library and :mod:`deepcomp.errors` only; a stage file and a
PyTorch model are :mod:`deepcomp.encode`'s and :mod:`deepcomp.loading`'s. A test keeps it so
(tests/test_architecture.py)::

    import deepcomp.dc
    f = deepcomp.dc.read_file("model.dc")     # f.header, f.tensors[name].array, .mask, .quant
"""
from .format import MAGIC, MAX_BITS, VERSION
from .read import DcFile, DecodedTensor, read, read_file
from .write import EncodedTensor, pack

__all__ = ["MAGIC", "VERSION", "MAX_BITS", "read", "read_file", "DcFile", "DecodedTensor",
           "pack", "EncodedTensor"]
