"""One server bootstrap that hosts any subset of the services on one grpc.server, with per-service
health, reflection, the error/auth/logging interceptor, message size limits and graceful shutdown."""

from __future__ import annotations

import importlib
import logging
import signal
import threading
from collections.abc import Iterable, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tutorforge.core import heap
from tutorforge.core.access import AccessPolicy
from tutorforge.core.admission import Admission
from tutorforge.core.errors import InvalidArgument
from tutorforge.core.interceptor import ServerInterceptor
from tutorforge.core.runtime import Runtime
from tutorforge.core.settings import SERVICE_NAMES, Settings
from tutorforge.core.telemetry import tracing
from tutorforge.core.telemetry.metrics import serve_metrics
from tutorforge.core.tls import server_credentials

log = logging.getLogger(__name__)

# Each service module exposes `register(server, runtime) -> str` (its full gRPC service name).
# Imported lazily so that a pod running one service never imports the others' heavy dependencies.
SERVICE_MODULES = {name: f"tutorforge.{name}.servicer" for name in SERVICE_NAMES}


def resolve_services(names: Iterable[str]) -> list[str]:
    requested = list(names) or ["all"]
    if "all" in requested:
        return list(SERVICE_NAMES)
    unknown = [name for name in requested if name not in SERVICE_MODULES]
    if unknown:
        raise InvalidArgument(f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(SERVICE_NAMES)} or all")
    return list(dict.fromkeys(requested))


@dataclass
class RunningServer:
    server: grpc.Server
    runtime: Runtime
    port: int
    services: list[str]
    health: health.HealthServicer
    interceptor: ServerInterceptor

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace: float | None = None) -> None:
        """Drain: mark NOT_SERVING, refuse new calls, let in-flight calls finish within `grace`."""
        self.health.enter_graceful_shutdown()
        grace = self.runtime.settings.server.shutdown_grace_seconds if grace is None else grace
        # Draining happens in the interceptor: grpc's own stop(grace) stops reading the request streams
        # of client-streaming calls already in flight, so uploads would be cut off.
        self.interceptor.begin_drain()
        if not self.interceptor.wait_idle(grace):
            log.warning("calls still in flight after %.0f s; cancelling them", grace)
        self.server.stop(0).wait()
        self.runtime.close()


def start_server(settings: Settings, services: Sequence[str] = ("all",), port: int | None = None) -> RunningServer:
    names = resolve_services(services)
    limits = settings.server.max_message_bytes
    admission = Admission(settings.server)
    interceptor = ServerInterceptor(admission=admission, access=AccessPolicy.from_settings(settings.server))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=admission.workers, thread_name_prefix="grpc"),
        interceptors=[interceptor],
        options=[
            ("grpc.max_send_message_length", limits),
            ("grpc.max_receive_message_length", limits),
            ("grpc.so_reuseport", 0),
        ],
    )
    address = f"{settings.server.host}:{settings.server.port if port is None else port}"
    credentials = server_credentials(settings.tls)  # TLS (mTLS) from the certificate files, if set
    bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if bound == 0:
        raise InvalidArgument(f"cannot listen on {settings.server.host}:{port}; is the port taken?")
    # Services of this process reach each other through this very port unless configured otherwise.
    settings = settings.model_copy(deep=True)
    settings.server.port = bound
    runtime = Runtime(settings)
    tracing.configure("+".join(names) if len(names) < len(SERVICE_NAMES) else "all")
    serve_metrics(runtime)

    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    full_names = []
    for name in names:
        module = importlib.import_module(SERVICE_MODULES[name])
        full_names.append(module.register(server, runtime))
    for full_name in full_names:
        health_servicer.set(full_name, health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([*full_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    heap.settle()  # the imported libraries stay out of later full collections (core/heap.py)
    server.start()
    log.info("serving %s on port %d", ",".join(names), bound, extra={"fields": {"services": names, "port": bound}})
    return RunningServer(
        server=server, runtime=runtime, port=bound, services=names, health=health_servicer, interceptor=interceptor
    )


def serve_forever(settings: Settings, services: Sequence[str], port: int | None = None) -> None:
    heap.enable()
    running = start_server(settings, services, port)
    stopped = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: draining in-flight calls", signum)
        stopped.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    stopped.wait()
    running.stop()
    log.info("stopped")
