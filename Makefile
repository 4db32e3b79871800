# Two commands: `make lab` opens the course, `make test` runs the whole suite.
# Both create .venv (with $(PYTHON), default python3) and install the course into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: lab test up down status clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "The course needs Python >= 3.10; run: make PYTHON=python3.11 ...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/python -m course_lib lab $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

up down status: $(STAMP)
	$(BIN)/python -m course_lib $@

clean: down
	rm -rf $(VENV) .runtime
