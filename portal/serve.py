"""`python -m portal.serve ARGS`: daphne's command line, with its access log sent through logging.

daphne writes its access log straight to a stream; through the `daphne.access` logger it passes the
token redaction of settings.LOGGING (portal.log_redaction). `runportal` serves the portal with this.

daphne hands a request body to Django in pieces of `request_buffer_size` bytes (8 KiB by default, with
no command-line option): an image upload's 16 MiB PATCH would be 2,048 hand-offs. Pieces of 1 MiB make
uploads several times faster (benchmarks/bench_image_upload.py); the body is still spooled to disk.
"""

from __future__ import annotations

import sys
from typing import Any

from daphne import cli
from daphne.server import Server

from portal.log_redaction import LoggedAccessLog

REQUEST_BUFFER_SIZE = 1024 * 1024


class PortalServer(Server):
    """daphne's server, passing request bodies on in 1 MiB pieces."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("request_buffer_size", REQUEST_BUFFER_SIZE)
        super().__init__(*args, **kwargs)


def main(argv: list[str] | None = None) -> None:
    """Run daphne with `argv` (default: this process's arguments)."""
    cli.AccessLogGenerator = LoggedAccessLog  # the name daphne's CommandLineInterface.run() builds its log from
    command = cli.CommandLineInterface()
    command.server_class = PortalServer
    command.run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
