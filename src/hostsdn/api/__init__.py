"""The management API of a running ``hostsdn up`` (HTTP/JSON, OpenAPI, Prometheus)."""
