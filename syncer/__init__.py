"""endpoints-sync: external inventories drive Kubernetes Services, EndpointSlices and Endpoints."""

__version__ = "0.1.0"
