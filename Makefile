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
	$(PY) -m pip install --quiet -e ".[notebooks,coco,dev]"
	touch $(STAMP)

install: $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

# FSSLAB_QUICK=1: notebooks use their quick settings so the whole suite stays within CI's budget.
test: $(STAMP)
	FSSLAB_QUICK=1 MPLBACKEND=Agg $(PY) -m pytest --nbval-lax -p no:cacheprovider tests notebooks

clean:
	rm -rf $(VENV) build *.egg-info
