# cmbprep developer commands. `make demo` and `make test` work on a fresh machine with
# Python >= 3.11: they create .venv in the repository and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO := demo
PYTEST_ARGS ?=

.PHONY: install demo test test-slow benchmarks train-classifier docs boutiques clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[test,docs]"
	# Atlas sources (CAT12 Hammers/Mori, academic licence) come with deepmriprep; --no-deps
	# keeps torch out. The region atlas is built from them once, offline (docs/anatomy.rst).
	$(BIN)/python -m pip install --no-deps deepmriprep==0.3.0
	$(BIN)/python -m cmbprep.algorithms.lobes
	touch $(STAMP)

install: $(STAMP)

demo: install
	rm -rf $(DEMO)
	$(BIN)/python -m cmbprep.testing.phantom $(DEMO)/bids --example
	$(BIN)/cmbprep $(DEMO)/bids $(DEMO)/derivatives participant -w $(DEMO)/work
	$(BIN)/cmbprep $(DEMO)/bids $(DEMO)/derivatives group
	@echo
	@echo "Participant reports: $$(ls $(CURDIR)/$(DEMO)/derivatives/sub-*.html | tr '\n' ' ')"
	@echo "Group report:        $(CURDIR)/$(DEMO)/derivatives/group_cmb.html"

test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

benchmarks: install
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

# Re-trains the detector's classifier on generated phantom families, family D held out
# (roughly 45 min on 2 cores,
# docs/benchmarks.md;
# writes cmbprep/data/models/cmbprep_classifier.json; docs/detection.rst).
TRAIN_CACHE ?= /tmp/cmbprep-training
train-classifier: install
	ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 $(BIN)/python -m cmbprep.testing.detector_training \
		--cache $(TRAIN_CACHE) --jobs 2 --hold-out D

docs: install
	$(BIN)/sphinx-build -W -b html docs docs/_build/html

boutiques: install
	$(BIN)/bosh validate boutiques.json

clean:
	rm -rf $(DEMO) docs/_build .pytest_cache
