"""A scrape of /metrics reads live state from every engine and collection this process has created. One that
cannot answer (its server gone, its store closed) must not turn the whole scrape into an HTTP 500."""

from __future__ import annotations

import socket

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tutorforge.core.telemetry import metrics
from tutorforge.inference.remote import OpenAIEngine

from tests.conftest import make_settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens here once the socket closes


def test_an_engine_whose_server_is_gone_does_not_fail_the_scrape(tmp_path) -> None:
    settings = make_settings(tmp_path, inference__engine="openai", inference__engine_url=f"http://127.0.0.1:{_closed_port()}")
    engine = OpenAIEngine(settings)
    metrics.watch_engine(engine)
    metrics.observe_job_state("training", "job-scrape", "RUNNING", terminal=False)
    try:
        text = generate_latest(REGISTRY).decode()
    finally:
        metrics.observe_job_state("training", "job-scrape", "CANCELLED", terminal=True)
        engine.close()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    # The other state is still reported: the running job counted by kind and state.
    jobs = [s for s in families["tutorforge_jobs"].samples if s.labels == {"kind": "training", "state": "RUNNING"}]
    assert jobs and jobs[0].value >= 1
