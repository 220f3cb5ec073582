# Two commands on a fresh machine: `make repro` (whole pipeline on the built-in synthetic data)
# and `make test`. Both create the virtual environment and install the project when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install repro test test-fast bench nohr ablations seeds tune scale gpu-estimate report clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

# dvc needs a git repository with at least one commit (a downloaded tarball has none).
repro: $(STAMP)
	@git rev-parse --verify -q HEAD >/dev/null || (git init -q && git add -A && git commit -qm "initial import")
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -n 2 --dist loadfile -q

test-fast: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -n 2 --dist loadfile -q -m "not slow"

bench: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro -f -s bench/dvc.yaml:bench

# The no-HR quality check, validated on the dev split and applied to the real scenes without HR (a study:
# about 10 minutes; the report reads metrics/nohr.json when present).
nohr: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro -s studies/dvc.yaml:nohr

# One-factor ablations of shift_and_add and misr_net on the dev scenes (a study: a few minutes; the report
# reads metrics/ablations.json when present).
ablations: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro -s studies/dvc.yaml:ablations

# Every network trained again with the seeds of params studies.seeds, scored on dev: mean ± sd over seeds
# (a study: the pipeline's training time once per extra seed; the report reads metrics/seeds.json).
seeds: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro -s studies/dvc.yaml:seeds

# shift_and_add's settings selected on the val split (never dev): a coordinate search over params studies.tune,
# every value also scored on the real scenes with an HR, never used to select (a study: a few minutes; the report
# reads metrics/tuning.json when present; params.yaml is not changed).
tune: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro -s studies/dvc.yaml:tune

# What the archive's size costs here: the pipeline from scratch at the default size and with
# profiles/archive-cpu.yaml (1450 scenes), in clones of the last commit, every stage timed with its
# memory and disk (metrics/scale.json; about an hour on 2 cores).
scale: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m probav.scale --profile profiles/archive-cpu.yaml --out metrics/scale.json

# Expected training time of the full-size GPU profile (traced FLOPs + metrics/bench.json); no GPU needed.
gpu-estimate: $(STAMP)
	$(BIN)/probav profile profiles/gpu-real.yaml --estimate --out reports/gpu-real-estimate.md \
		--json-out metrics/gpu-estimate.json

clean-venv:
	rm -rf $(VENV)
