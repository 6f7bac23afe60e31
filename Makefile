# Set-up is part of every target: a fresh clone needs nothing but python3 (3.10+).
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench

demo: $(STAMP)
	$(VENV)/bin/deepcomp demo

test: $(STAMP)
	$(PY) -m pytest

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test,onnx]'
	touch $(STAMP)
