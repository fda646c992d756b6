# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need.
.PHONY: demo test setup lint typecheck pytest bench migration docs typing clean

VENV := .venv/bin

demo: setup
	$(VENV)/python -m bot.demo --registry $(or $(REGISTRY),distribution)

test: setup lint typecheck pytest

setup:
	@bash scripts/setup.sh

lint:
	$(VENV)/ruff check recommender bot tests bench scripts

typecheck:
	$(VENV)/mypy

pytest:
	$(VENV)/pytest

# Each benchmark is a script of its own (one per target); this lists them.
bench: setup
	@for f in bench/*.py; do case $$f in */__init__.py) ;; *) echo "$(VENV)/python $$f --help";; esac; done
	@echo "targets and latest figures: bench/README.md"

# Regenerate the initial migration from recommender/store/tables.py (until the first release).
migration: setup
	$(VENV)/python scripts/regen_initial_migration.py

docs: setup
	$(VENV)/tagwarden config docs > docs/configuration.md

typing: setup
	$(VENV)/tagwarden config typing > recommender/settings_typed.py

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache data/generated data/demo
