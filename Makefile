# The two commands a user needs (see README):
#   make run    set up everything that is missing and serve the portal on http://127.0.0.1:8000
#   make test   the same set-up, then the whole test suite (PostgreSQL + real qemu:///system)
# For maintainers: `make screenshots` refreshes docs/screenshots/ from the browser tests (which
# otherwise write theirs to var/screenshots/, ignored by git, so `make test` leaves the tree clean).
.PHONY: run test setup lint bench screenshots

run:
	@scripts/setup.sh
	@.venv/bin/python manage.py runportal

test:
	@scripts/test.sh

setup:
	@scripts/setup.sh

screenshots:
	@scripts/setup.sh --test
	@PORTAL_SCREENSHOTS=1 .venv/bin/pytest -p no:cacheprovider -q -m browser \
		tests/browser/test_e2e.py tests/consoles/test_browser.py

lint:
	@.venv/bin/ruff check .
	@.venv/bin/lint-imports --no-cache
	@.venv/bin/mypy

bench:
	@.venv/bin/python benchmarks/run.py
