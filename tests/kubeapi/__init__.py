"""An in-repo Kubernetes API server for tests: real HTTP and JSON on 127.0.0.1."""

from tests.kubeapi.server import KubeApiServer, RecordedRequest

__all__ = ["KubeApiServer", "RecordedRequest"]
