"""A small stand-in for the Kubernetes API server, answering list and watch the way it does: lists carry
`metadata.resourceVersion`; `?watch=true&resourceVersion=N` streams newline-delimited JSON events after N
with chunked encoding and ends at `timeoutSeconds`; a version older than the compaction point gets an ERROR
event with code 410 (Gone). `labelSelector` supports the `key` (exists) form the scaler uses.

HorizontalPodAutoscalers are stored as the API server stores them: with the HPAConfigurableTolerance gate
off (`tolerance_gate=False`, the default before Kubernetes 1.35) behavior.*.tolerance is dropped on write
(pkg/registry/autoscaling/horizontalpodautoscaler/strategy.go dropDisabledFields).

The cluster has no Kubernetes API here, so this is the one mocked part; it serves recorded objects.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

PATHS = {
    "/apis/apps/v1/deployments": "deployments",
    "/apis/keda.sh/v1alpha1/scaledobjects": "scaledobjects",
    "/api/v1/nodes": "nodes",
    "/apis/autoscaling/v2/horizontalpodautoscalers": "horizontalpodautoscalers",
}
KINDS = {"deployments": "DeploymentList", "scaledobjects": "ScaledObjectList", "nodes": "NodeList",
         "horizontalpodautoscalers": "HorizontalPodAutoscalerList"}


class FakeApiServer:
    def __init__(self, objects: dict[str, list[dict[str, Any]]], tolerance_gate: bool = False) -> None:
        self.tolerance_gate = tolerance_gate
        self.version = 100
        self.lock = threading.Condition()
        self.store: dict[str, dict[tuple[str, str], dict[str, Any]]] = {r: {} for r in KINDS}
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []  # (version, resource, type, object)
        self.compacted = 0
        self.generation = 0  # bumped to drop every open watch
        self.requests: list[str] = []
        for resource, items in objects.items():
            for obj in items:
                self.apply(resource, "ADDED", obj)
        self._server: ThreadingHTTPServer | None = None

    def apply(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        with self.lock:
            self.version += 1
            obj = copy.deepcopy(obj)
            obj.setdefault("metadata", {})["resourceVersion"] = str(self.version)
            if resource == "horizontalpodautoscalers" and not self.tolerance_gate:
                for rules in ((obj.get("spec") or {}).get("behavior") or {}).values():
                    if isinstance(rules, dict):
                        rules.pop("tolerance", None)
            key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            if kind == "DELETED":
                self.store[resource].pop(key, None)
            else:
                self.store[resource][key] = obj
            self.events.append((self.version, resource, kind, obj))
            self.lock.notify_all()

    def compact(self) -> None:
        """Forget history: watches from an older version get 410 Gone."""
        with self.lock:
            self.compacted = self.version
            self.generation += 1
            self.lock.notify_all()

    def drop_watches(self) -> None:
        with self.lock:
            self.generation += 1
            self.lock.notify_all()

    @staticmethod
    def _selected(obj: dict[str, Any], selector: str | None) -> bool:
        if not selector:
            return True
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(term.strip() in labels for term in selector.split(","))

    def start(self) -> str:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                url = urlparse(self.path)
                api.requests.append(self.path)
                resource = PATHS.get(url.path)
                if resource is None:
                    self._json(404, {"kind": "Status", "code": 404, "message": f"no route {url.path}"})
                    return
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                selector = query.get("labelSelector")
                if query.get("watch") in ("true", "1", "True"):
                    self._watch(resource, int(query.get("resourceVersion") or 0), selector,
                                float(query.get("timeoutSeconds") or 30))
                    return
                with api.lock:
                    items = [o for o in api.store[resource].values() if api._selected(o, selector)]
                    body = {"kind": KINDS[resource], "apiVersion": "v1",
                            "metadata": {"resourceVersion": str(api.version)}, "items": items}
                self._json(200, body)

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _chunk(self, event: dict[str, Any]) -> None:
                data = (json.dumps(event) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _watch(self, resource: str, since: int, selector: str | None, timeout: float) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                deadline = time.monotonic() + timeout
                with api.lock:
                    generation = api.generation
                    gone = since < api.compacted
                try:
                    if gone:
                        self._chunk({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                                                 "message": f"too old resource version: {since}"}})
                    else:
                        sent = since
                        while time.monotonic() < deadline:
                            with api.lock:
                                pending = [e for e in api.events if e[0] > sent and e[1] == resource]
                                if not pending:
                                    api.lock.wait(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
                                if api.generation != generation:
                                    break
                            for version, _, kind, obj in pending:
                                sent = version
                                if api._selected(obj, selector):
                                    self._chunk({"type": kind, "object": obj})
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-kube-api").start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self.drop_watches()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
