"""Not Grafana: answers /api/health on 3000 like Grafana's, so the compose file's healthcheck passes."""

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/api/health":
            status, body = 200, {"database": "ok", "version": "stand-in", "note": "not Grafana: a stand-in"}
        else:
            status, body = 404, {"message": "a stand-in for Grafana: only /api/health answers"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's signature
        """Quiet."""


ThreadingHTTPServer(("0.0.0.0", 3000), Health).serve_forever()  # noqa: S104 - the container's own network
