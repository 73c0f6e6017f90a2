# fsslab: `make lab` opens the notebooks, `make test` runs everything CI runs. Both set themselves up.
VENV ?= .venv
PYTHON ?= python3
# The CPU wheel on CPU-only machines; override on GPU machines (e.g. TORCH="torch==2.13.0 --index-url ...").
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fsslab-installed

.PHONY: lab test install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[notebooks,coco,prep,dev]"
	touch $(STAMP)

install: $(STAMP)

# Jupyter refuses to start as root ("Running as root is not recommended"), which is the usual user in a
# container: pass --allow-root only then.
LAB_FLAGS := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(LAB_FLAGS) notebooks/

# FSSLAB_QUICK=1: notebooks use their quick settings so the whole suite stays within CI's budget.
test: $(STAMP)
	$(VENV)/bin/ruff check fsslab tests benchmarks data_prep
	FSSLAB_QUICK=1 MPLBACKEND=Agg $(PY) -m pytest --nbval-lax -p no:cacheprovider tests notebooks

clean:
	rm -rf $(VENV) build *.egg-info
