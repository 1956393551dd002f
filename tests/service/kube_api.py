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
                if url.path.startswith(LEASES):  # Lease section (HA), see the end of this file
                    self._json(*lease_request(api, "GET", url.path, None))
                    return
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

            # -- Lease section (HA): writes exist only for Leases
            def _lease_write(self, method: str) -> None:
                api.requests.append(f"{method} {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._json(400, _status(400, "BadRequest", "body is not JSON"))
                    return
                self._json(*lease_request(api, method, urlparse(self.path).path, body))

            def do_POST(self) -> None:
                self._lease_write("POST")

            def do_PUT(self) -> None:
                self._lease_write("PUT")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-kube-api").start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self.drop_watches()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# ------------------------------------------------------------------------------------------------------
# Lease section (added for leader election, issue 14; additive: the list/watch stand-in above is unchanged
# but for the route hook in do_GET and the write handlers). coordination.k8s.io/v1 Leases with the API
# server's optimistic concurrency, as apiserver's generic registry store does it
# (staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go, Store.Create and Store.Update):
# - GET of a missing Lease: 404 NotFound;
# - POST of a Lease that exists: 409 AlreadyExists;
# - PUT carrying a metadata.resourceVersion other than the stored one: 409 Conflict ("the object has been
#   modified"); a PUT with no resourceVersion on an existing object is rejected too (Leases are not
#   unconditionally updatable: pkg/registry/coordination/lease/strategy.go, leaseStrategy.AllowUnconditionalUpdate
#   returns false);
# - every successful write gets a new resourceVersion from the server's single counter.

LEASES = "/apis/coordination.k8s.io/v1/namespaces/"


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
            "message": message}


def lease_request(api: FakeApiServer, method: str, path: str, body: dict[str, Any] | None
                  ) -> tuple[int, dict[str, Any]]:
    parts = path[len(LEASES):].strip("/").split("/")  # <ns>/leases[/<name>]
    if len(parts) < 2 or parts[1] != "leases":
        return 404, _status(404, "NotFound", f"no route {path}")
    namespace, name = parts[0], parts[2] if len(parts) > 2 else None
    leases: dict[tuple[str, str], dict[str, Any]] = api.__dict__.setdefault("leases", {})
    with api.lock:
        if method == "GET":
            if name is None:
                items = [copy.deepcopy(o) for (ns, _), o in leases.items() if ns == namespace]
                return 200, {"kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1",
                             "metadata": {"resourceVersion": str(api.version)}, "items": items}
            if (namespace, name) not in leases:
                return 404, _status(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found')
            return 200, copy.deepcopy(leases[(namespace, name)])
        assert body is not None
        meta = body.setdefault("metadata", {})
        target = name or meta.get("name")
        if not target:
            return 422, _status(422, "Invalid", "metadata.name: Required value")
        stored = leases.get((namespace, target))
        if method == "POST":
            if stored is not None:
                return 409, _status(409, "AlreadyExists", f'leases.coordination.k8s.io "{target}" already exists')
        elif method == "PUT":
            if stored is None:
                return 404, _status(404, "NotFound", f'leases.coordination.k8s.io "{target}" not found')
            if meta.get("resourceVersion") != stored["metadata"]["resourceVersion"]:
                return 409, _status(409, "Conflict", f'Operation cannot be fulfilled on leases.coordination.k8s.io '
                                                     f'"{target}": the object has been modified; please apply your '
                                                     "changes to the latest version and try again")
        else:
            return 405, _status(405, "MethodNotAllowed", method)
        api.version += 1
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = "coordination.k8s.io/v1", "Lease"
        obj["metadata"].update(name=target, namespace=namespace, resourceVersion=str(api.version))
        leases[(namespace, target)] = obj
        return (201 if method == "POST" else 200), copy.deepcopy(obj)
