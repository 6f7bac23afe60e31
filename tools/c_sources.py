"""The C reader's source files, as c/Makefile's READER line lists them: the one list, which
the tests (tests/test_c_reader.py, tests/test_dcrun.py), tools/bench_c_decode.py and
examples/deploy.py build from, as the Makefile's own rules do.

    READER      the reader's .c files (c/dc.c first), absolute paths; each has its header
"""
import os
import re

C = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "c")


def _reader() -> list[str]:
    with open(os.path.join(C, "Makefile")) as f:
        m = re.search(r"^READER\s*=(.*)$", f.read(), re.M)
    if m is None or not m.group(1).split():
        raise RuntimeError("c/Makefile lists no READER sources")
    return [os.path.join(C, name) for name in m.group(1).split()]


READER = _reader()
