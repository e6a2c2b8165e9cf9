# Every target installs what it needs first, so each works on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install lock synth train calibrate bench bench-step bench-startup bench-grid \
	bench-plan bench-commands bench-floor bench-memory bench-loader bench-synth study-hours report test test-slow test-slurm \
	lint docs clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# constraints.txt: the exact versions (the lock) within pyproject.toml's ranges.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv: shiftlab, every extra and the test tools, as locked

lock:  ## resolve pyproject.toml's ranges again into constraints.txt (a scratch venv; minutes)
	set -e; scratch=$$(mktemp -d); trap 'rm -rf "$$scratch"' EXIT; \
	$(PYTHON) -m venv "$$scratch"; \
	"$$scratch/bin/pip" install --quiet ".[dev]"; \
	{ sed -n '/^#/p' constraints.txt; "$$scratch/bin/pip" list --format=freeze \
		--exclude shiftlab --exclude pip --exclude wheel; } > constraints.new
	mv constraints.new constraints.txt

synth: $(STAMP)  ## generate the synthetic MRI set as DICOM and ingest it
	$(BIN)/python -m shiftlab.synth

train: $(STAMP)  ## the main job: synthetic MRI, train on GE, test on GE and Siemens
	$(BIN)/python -m shiftlab.train

calibrate: $(STAMP)  ## experiment=calibration, then its report: synthetic ΔAUC vs the study (1 h on 2 CPUs)
	$(BIN)/python -m shiftlab.calibrate

# make report                      the report of experiment=paper_grid's run records
# make report EXPERIMENT=noise      another grid preset
# make report RUNS=outputs/runs     every run record below a folder
EXPERIMENT ?= paper_grid
report: $(STAMP)  ## tables and figures from a grid's run records (EXPERIMENT=, or RUNS=folder)
	$(BIN)/python -m shiftlab.report $(if $(RUNS),$(RUNS),experiment=$(EXPERIMENT))

bench: $(STAMP)  ## benchmarks: cached vs decode-every-time epochs
	$(BIN)/python benchmarks/cache_vs_decode.py

bench-step: $(STAMP)  ## a shiftlab epoch vs a hand-written loop (about 3 minutes)
	$(BIN)/python benchmarks/step_overhead.py

bench-startup: $(STAMP)  ## the fixed cost of one run, part by part
	$(BIN)/python benchmarks/startup.py

bench-grid: $(STAMP)  ## the smoke grid with 1 vs 2 parallel workers
	$(BIN)/python benchmarks/grid_workers.py

bench-plan: $(STAMP)  ## grid dry-run and status: noise (980 runs) vs the smoke grid (12)
	$(BIN)/python benchmarks/grid_planning.py

bench-commands: $(STAMP)  ## each command of the README's "Going further" block, timed in order
	$(BIN)/python benchmarks/command_times.py

bench-floor: $(STAMP)  ## the quick start's arithmetic against the CPU's peak (about a minute)
	$(BIN)/python benchmarks/arithmetic_floor.py

bench-memory: $(STAMP)  ## peak memory of a run at 1x and 4x the dataset (a few minutes)
	$(BIN)/python benchmarks/memory_scaling.py

bench-loader: $(STAMP)  ## DataLoader images/s, per-sample vs batch-wise reads
	$(BIN)/python benchmarks/loader_throughput.py

bench-synth: $(STAMP)  ## synthetic generation: patients/s against the old generator and pydicom alone
	$(BIN)/python benchmarks/synth_speed.py

study-hours: $(STAMP)  ## GPU-hours of the whole study from the measured GPU tables
	$(BIN)/python benchmarks/study_gpu_hours.py

test: $(STAMP)  ## the default test suite (tests marked slow or slurm excluded)
	WANDB_MODE=offline $(BIN)/python -m pytest -q

test-slow: $(STAMP)  ## the slow tests: the end-to-end paths (docs/tests.md); CI runs them too
	WANDB_MODE=offline $(BIN)/python -m pytest -q -m slow

# Root on Debian/Ubuntu: installs slurm-wlm, slurmdbd, munge and mariadb-server (apt) and starts
# a one-node cluster on this machine (.ci/slurm/start-cluster.sh, idempotent), then the tests
# marked slurm: the smoke grid through launcher=slurm with a requeue, the sbatch script, and
# failures (about 5 minutes on 2 CPUs).
test-slurm: $(STAMP)  ## a one-node SLURM cluster here (root, apt), then the SLURM tests
	.ci/slurm/start-cluster.sh
	WANDB_MODE=offline $(BIN)/python -m pytest -q -m slurm tests/runs/test_slurm.py

docs: $(STAMP)  ## build the documentation site strictly (a broken link or a missing page fails)
	$(BIN)/mkdocs build --strict --site-dir site

lint: $(STAMP)  ## ruff, and the layers of shiftlab/ (import-linter: pyproject.toml)
	$(BIN)/ruff check shiftlab tests benchmarks
	$(BIN)/ruff format --check shiftlab tests benchmarks
	$(BIN)/lint-imports --no-cache  # a stale cache can hide a new import

clean:  ## remove caches and outputs (keeps .venv and data/)
	rm -rf .pytest_cache .ruff_cache outputs/* wandb lightning_logs
	find shiftlab tests -name __pycache__ -type d -prune -exec rm -rf {} +
