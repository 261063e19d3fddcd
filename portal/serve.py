"""`python -m portal.serve ARGS`: daphne's command line, with its access log sent through logging.

daphne writes its access log straight to a stream; through the `daphne.access` logger it passes the
token redaction of settings.LOGGING (portal.log_redaction). `runportal` serves the portal with this.
"""

from __future__ import annotations

import sys

from daphne import cli

from portal.log_redaction import LoggedAccessLog


def main(argv: list[str] | None = None) -> None:
    """Run daphne with `argv` (default: this process's arguments)."""
    cli.AccessLogGenerator = LoggedAccessLog  # the name daphne's CommandLineInterface.run() builds its log from
    cli.CommandLineInterface().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
