"""Operational signals: Prometheus metrics (`metrics`), OpenTelemetry traces (`tracing`) and experiment
tracking in MLflow / W&B (`experiments`). See docs/observability.md."""
