"""A tiny fake Keystone v3 on 127.0.0.1 for the connection tests: it answers version discovery and refuses
every token request with 401 (as Keystone does for a wrong password or application-credential secret),
recording each request body so a test can see what the portal sent. A thread, loopback only."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any


class FakeKeystone:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, Any]]] = []  # (method, path, JSON body)
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                owner.requests.append(("GET", self.path, {}))
                v3 = {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
                      "links": [{"rel": "self", "href": f"{owner.url}/v3/"}],
                      "media-types": [{"base": "application/json",
                                       "type": "application/vnd.openstack.identity-v3+json"}]}
                if self.path.rstrip("/") in ("", "/v3"):
                    if self.path.rstrip("/") == "/v3":
                        self._send(200, {"version": v3})
                    else:
                        self._send(300, {"versions": {"values": [v3]}})
                    return
                self._send(404, {"error": {"code": 404, "title": "Not Found", "message": "Not found"}})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                owner.requests.append(("POST", self.path, body))
                self._send(401, {"error": {"code": 401, "title": "Unauthorized",
                                           "message": "The request you have made requires authentication."}})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-keystone", daemon=True)

    def __enter__(self) -> FakeKeystone:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def token_requests(self) -> list[dict[str, Any]]:
        return [body for method, path, body in self.requests if method == "POST" and path.startswith("/v3/auth/tokens")]
