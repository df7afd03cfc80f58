# cmbprep developer commands. `make demo` and `make test` work on a fresh machine with
# Python >= 3.11: they create .venv in the repository and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO := demo
PYTEST_ARGS ?=

CONSTRAINTS := requirements/constraints.txt

.PHONY: install demo test test-slow benchmarks train-classifier docs boutiques clean lock hpc-check

# Every dependency is pinned by the lock file $(CONSTRAINTS) (refresh: `make lock`).
$(STAMP): pyproject.toml Makefile $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c $(CONSTRAINTS) -e ".[test,docs]"
	# Atlas sources (CAT12 Hammers/Mori, academic licence) come with deepmriprep; --no-deps
	# keeps torch out. The region atlas is built from them once, offline, with the shipped
	# template-to-template transform (docs/anatomy.rst; about 20 s).
	$(BIN)/python -m pip install -c $(CONSTRAINTS) --no-deps deepmriprep==0.3.0
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

# The classifier experiments read (and first fill: 384 scans and the fit, 69 min on 2 cores
# measured 2026-12-03, docs/benchmarks.md) the training cache.
# The per-candidate inputs of the experimental variants first (classifier_settings reads them).
benchmarks: install
	for b in bilateral_continuation magnitude_geometry; do \
		$(BIN)/python benchmarks/$$b.py --cache $(TRAIN_CACHE) \
			--out $(TRAIN_CACHE)/bilateral --jobs 2 || exit 1; done
	for b in benchmarks/*.py; do \
		case $$b in */bilateral_continuation.py|*/magnitude_geometry.py) continue;; \
		*/classifier_settings.py) \
			args="--cache $(TRAIN_CACHE) --extra $(TRAIN_CACHE)/bilateral";; \
		*/edge_distance.py) args="--cache $(TRAIN_CACHE) --real-background";; \
		*/juxtacortical.py) args="--cache $(TRAIN_CACHE)/juxtacortical --jobs 2";; \
		*/classifier_ablation.py|*/detection_ceiling.py|\
			*/false_positive_sources.py|*/learning_curve.py|*/megre_blooming.py|\
			*/patch_network.py|*/phase_convention_in_brain.py|*/phase_fit_centre.py|\
			*/phase_patch_network.py|\
			*/phase_sign_calibration.py|*/score_reliability.py|\
			*/sensitivity_by_slice.py) \
			args="--cache $(TRAIN_CACHE)";; \
		*) args="";; esac; \
		$(BIN)/python $$b $$args || exit 1; done

# Re-trains the detector's classifier on generated phantom families, family D held out
# (from an empty cache 67 min on 2 cores, measured beside other jobs;
# docs/benchmarks.md; it writes the shipped file again byte for byte;
# writes cmbprep/data/models/cmbprep_classifier.json; docs/detection.rst).
TRAIN_CACHE ?= /tmp/cmbprep-training
train-classifier: install
	ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 $(BIN)/python -m cmbprep.testing.detector_training \
		--cache $(TRAIN_CACHE) --jobs 2 --hold-out D

docs: install
	$(BIN)/sphinx-build -W -b html docs docs/_build/html

boutiques: install
	$(BIN)/bosh validate boutiques.json

# Refresh the lock file from the current .venv: upgrade within pyproject.toml's ranges
# first (e.g. `.venv/bin/pip install -U -e ".[test,docs]"`), run `make test`, then
# `make lock` and commit requirements/constraints.txt.
lock:
	$(BIN)/python requirements/lock.py $(CONSTRAINTS)

# The SLURM recipe of docs/hpc.rst, run for real on a one-node SLURM brought up on this
# machine (needs root; installs slurm-wlm and munge with apt-get if missing). Not part
# of `make test`; measured in docs/benchmarks.md.
hpc-check: install
	bash benchmarks/hpc_check.sh

clean:
	rm -rf $(DEMO) docs/_build .pytest_cache
