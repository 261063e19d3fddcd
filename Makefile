# The two commands a user needs (see README):
#   make run    set up everything that is missing and serve the portal on http://127.0.0.1:8000
#   make test   the same set-up, then the whole test suite (PostgreSQL + real qemu:///system)
.PHONY: run test setup lint bench clean-test-domains

run:
	@scripts/setup.sh
	@.venv/bin/python manage.py runportal

test:
	@scripts/test.sh

setup:
	@scripts/setup.sh

lint:
	@.venv/bin/ruff check .
	@.venv/bin/lint-imports --no-cache
	@.venv/bin/mypy

bench:
	@.venv/bin/python benchmarks/run.py
