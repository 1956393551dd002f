"""KEDA's ExternalScaler wire contract. The *_pb2 modules are generated from externalscaler.proto on demand
(scaler/protogen.py), never committed, so the .proto stays the single source."""
