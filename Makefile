# Two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install stop clean

$(BIN)/rsubd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/rsubd

install: $(BIN)/rsubd

demo: install
	bash examples/demo.sh

test: install
	$(BIN)/ruff check daemon client tests bench tools
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 --dist loadfile

stop:
	-$(BIN)/rsub daemon stop

clean:
	rm -rf $(VENV) demo build *.egg-info
