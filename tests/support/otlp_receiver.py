"""A minimal OTLP trace receiver for the tests, built on the official OpenTelemetry protocol
definitions (PyPI's opentelemetry-proto, with grpcio): it accepts ExportTraceServiceRequest
over gRPC (TraceService/Export) and over HTTP (POST /v1/traces, application/x-protobuf),
and appends every span it receives to OUT as one JSON object per line:
trace_id, span_id, parent_span_id (hex, "" for a root), name, kind, service, instance,
attributes (string values), status_code.

Usage: python3 otlp_receiver.py OUT
Prints "grpc PORT" and "http PORT" (both on 127.0.0.1) once it listens; runs until killed.
"""

import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

OUT = sys.argv[1]
LOCK = threading.Lock()


def value(v):
    kind = v.WhichOneof("value")
    return str(getattr(v, kind)) if kind else ""


def record(request):
    lines = []
    for rs in request.resource_spans:
        resource = {a.key: value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for span in ss.spans:
                lines.append(json.dumps({
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "name": span.name,
                    "kind": span.kind,
                    "service": resource.get("service.name", ""),
                    "instance": resource.get("service.instance.id", ""),
                    "attributes": {a.key: value(a.value) for a in span.attributes},
                    "status_code": span.status.code,
                }))
    with LOCK, open(OUT, "a") as f:
        for line in lines:
            f.write(line + "\n")


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        record(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class HttpHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        record(request)
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), HttpHandler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    print(f"grpc {grpc_port}", flush=True)
    print(f"http {http.server_address[1]}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
