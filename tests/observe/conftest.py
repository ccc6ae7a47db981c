"""The observability tests run real servers on loopback: mpp-proxy serve, an upstream,
Prometheus, an OTLP receiver, a webhook receiver."""
