# make run   : set everything up, then run the demo (meltquench run, its built-in defaults)
# make test  : set everything up (with the ml extra: CHGNet, SevenNet, CPU torch), then run the
#              whole test suite (MPI and machine-learned-potential tests included)
# make bench : set up with the benchmark extras, then run every benchmark and print one table
PYTHON ?= python3
export OMPI_ALLOW_RUN_AS_ROOT = 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM = 1
export OMPI_MCA_rmaps_base_oversubscribe = 1
export OMP_NUM_THREADS ?= 1
# pytest-xdist workers for 'make test': one per core, at most 4 (each holds torch and GPAW,
# about 1 GB, and the MPI tests start 2 ranks of their own). 'TEST_WORKERS=0' runs serially.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)

.PHONY: setup run test bench
setup:
	PYTHON=$(PYTHON) bash scripts/setup.sh dev

run: setup
	meltquench run

test:
	PYTHON=$(PYTHON) bash scripts/setup.sh dev,ml
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup tests

bench:
	PYTHON=$(PYTHON) bash scripts/setup.sh bench
	$(PYTHON) benchmarks/run_all.py
