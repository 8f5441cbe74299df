"""Not Jaeger: receives OTLP/HTTP trace exports on 4318 and answers /api/services and /api/traces on 16686."""

import json
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

lock = threading.Lock()
traces: dict[str, dict[str, list[dict[str, str]]]] = defaultdict(lambda: defaultdict(list))  # service -> trace -> spans


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/traces":
            self.reply(404, b"")
            return
        export = ExportTraceServiceRequest.FromString(body)
        with lock:
            for resource_spans in export.resource_spans:
                names = [a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"]
                service = names[0] if names else "unknown_service"
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        trace_id = span.trace_id.hex()
                        traces[service][trace_id].append({"traceID": trace_id, "operationName": span.name})
        self.reply(200, b"", "application/x-protobuf")

    def do_GET(self) -> None:
        url = urlparse(self.path)
        with lock:
            if url.path == "/api/services":
                self.reply_json({"data": sorted(traces)})
            elif url.path == "/api/traces":
                service = parse_qs(url.query).get("service", [""])[0]
                found = [{"traceID": t, "spans": spans} for t, spans in traces.get(service, {}).items()]
                self.reply_json({"data": found})
            else:
                self.reply(404, b"")

    def reply_json(self, value: object) -> None:
        self.reply(200, json.dumps(value).encode(), "application/json")

    def reply(self, status: int, body: bytes, kind: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's signature
        """Quiet."""


for port in (4318, 16686):
    server = ThreadingHTTPServer(("0.0.0.0", port), Receiver)  # noqa: S104 - the container's own network
    threading.Thread(target=server.serve_forever, daemon=True).start()
threading.Event().wait()
