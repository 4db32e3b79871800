# Two commands: `make lab` opens the course, `make test` runs the whole suite (`make docs` builds the site).
# Both create .venv (with $(PYTHON), default python3) and install the course into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The tested versions of every Python dependency; `make test CONSTRAINTS=` tries the newest releases instead.
CONSTRAINTS ?= constraints.txt

.PHONY: lab test docs up down status clean constraints

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "The course needs Python >= 3.10; run: make PYTHON=python3.11 ...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[test,docs]'
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/python -m course_lib lab $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

# The course as a static site in docs/_build/html, from the committed notebooks as they are (nothing is
# executed); warnings are errors, as in CI (tests/test_docs.py builds it too and checks its links).
# -E: every page is read again, so none keeps a stale generated part (the code links, the Lua page).
docs: $(STAMP)
	$(BIN)/python -m sphinx -E -W --keep-going -q -b html docs docs/_build/html
	@echo "The site: docs/_build/html/index.html"

up down status: $(STAMP)
	$(BIN)/python -m course_lib $@

# Pin what .venv holds now (after an upgrade has passed `make test`); markers keep Python 3.10 unpinned,
# since several pinned releases need 3.11.
constraints: $(STAMP)
	{ echo "# The versions \`make\` and CI install (pip install -c constraints.txt): stored outputs and widgets are"; \
	  echo "# verified with exactly these. Regenerate after an upgrade has passed the suite: make constraints."; \
	  echo "# The newest releases are tried by .github/workflows/latest.yml every week (make test CONSTRAINTS=)."; \
	  $(BIN)/python -m pip freeze --exclude-editable | sed 's/$$/ ; python_version >= "3.11"/'; } > constraints.txt

clean: down
	rm -rf $(VENV) .runtime
