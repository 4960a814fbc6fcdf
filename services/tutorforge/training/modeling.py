"""The model a run trains: the base chat model with a LoRA adapter. On CPU plain transformers + peft in
float32; with CUDA, Unsloth's `FastLanguageModel` (optionally 4-bit) and bf16/fp16. Unsloth is an
optional extra (`tutorforge[gpu]`) imported only on that path: it cannot even be imported without a GPU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tutorforge.core.errors import FailedPrecondition, InvalidArgument
from tutorforge.training.config import LoraSpec

# Attention projection names by family; the first family found in the model wins.
_ATTENTION_MODULES = (
    ("q_proj", "k_proj", "v_proj", "o_proj"),  # Llama, Mistral, Qwen, Gemma, SmolLM
    ("qkv_proj", "o_proj"),  # Phi-3
    ("query_key_value", "dense"),  # Falcon, GPT-NeoX
    ("c_attn", "c_proj"),  # GPT-2
    ("Wqkv", "out_proj"),  # MPT
)


@dataclass
class DeviceConfig:
    """Where and in what precision a worker trains."""

    device: str
    # "float32", "bfloat16" or "float16".
    dtype: str
    use_unsloth: bool
    load_in_4bit: bool


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def choose_device(use_unsloth: bool, load_in_4bit: bool, gpus_per_worker: float) -> DeviceConfig:
    """bf16/fp16, Unsloth and 4-bit only with CUDA; requesting them without a GPU is a clear error."""
    has_gpu = gpus_per_worker > 0 and cuda_available()
    if (use_unsloth or load_in_4bit) and not has_gpu:
        wanted = "use_unsloth" if use_unsloth else "load_in_4bit"
        raise FailedPrecondition(
            f"{wanted} needs a CUDA GPU on every training worker, and "
            + (
                "resources.gpus_per_worker is 0"
                if gpus_per_worker <= 0
                else "this worker sees no CUDA device"
            )
            + "; set resources.gpus_per_worker >= 1 on a GPU cluster, or train without it on CPU"
        )
    if not has_gpu:
        return DeviceConfig("cpu", "float32", False, False)
    import torch

    dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return DeviceConfig("cuda", dtype, use_unsloth, load_in_4bit)


def linear_module_names(model: Any) -> set[str]:
    import torch

    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in (
            "Conv1D",
            "Linear4bit",
            "Linear8bitLt",
        ):
            names.add(name.rsplit(".", 1)[-1])
    return names


def detect_target_modules(model: Any) -> list[str]:
    """The attention projections of this architecture (what LoRA adapts by default)."""
    present = linear_module_names(model)
    for family in _ATTENTION_MODULES:
        if all(name in present for name in family):
            return list(family)
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    known = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(
        getattr(model.config, "model_type", ""), []
    )
    found = [name for name in known if name in present]
    if found:
        return found
    output = {"lm_head", "embed_out", "output"}
    fallback = sorted(present - output)
    if not fallback:
        raise InvalidArgument("cannot find linear layers to adapt in this model: set lora.target_modules")
    return fallback


def check_target_modules(model: Any, target_modules: list[str]) -> None:
    missing = sorted(set(target_modules) - linear_module_names(model))
    if missing:
        raise InvalidArgument(
            f"lora.target_modules {missing} are not linear layers of this model; "
            f"choose among {sorted(linear_module_names(model))}"
        )


def check_target_modules_of(model_path: str, target_modules: list[str]) -> None:
    """Validate requested target modules against the architecture, without loading any weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path, local_files_only=True))
    check_target_modules(skeleton, target_modules)


def load_for_training(
    model_path: str, lora: LoraSpec, device: DeviceConfig, max_seq_length: int, seed: int
) -> Any:
    """The base model with a fresh trainable LoRA adapter (on CPU unless a loader placed it)."""
    import torch

    if device.use_unsloth:
        return _load_unsloth(model_path, lora, device, max_seq_length, seed)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    # Nothing downloads at run time: the driver resolved `model_path` to local files.
    kwargs: dict[str, Any] = {"dtype": getattr(torch, device.dtype), "local_files_only": True}
    if device.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_compute_dtype=kwargs["dtype"]
        )
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    model.config.use_cache = False
    targets = lora.target_modules or detect_target_modules(model)
    check_target_modules(model, targets)
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        bias=lora.bias,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _load_unsloth(
    model_path: str, lora: LoraSpec, device: DeviceConfig, max_seq_length: int, seed: int
) -> Any:
    try:
        from unsloth import FastLanguageModel
    except ImportError as error:
        raise FailedPrecondition(
            "use_unsloth needs the optional extra on the GPU workers: pip install 'tutorforge[gpu]'"
        ) from error
    import torch

    model, _ = FastLanguageModel.from_pretrained(
        model_name=model_path,
        max_seq_length=max_seq_length,
        dtype=getattr(torch, device.dtype),
        load_in_4bit=device.load_in_4bit,
    )
    targets = lora.target_modules or detect_target_modules(model)
    return FastLanguageModel.get_peft_model(
        model,
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        bias=lora.bias,
        random_state=seed,
        use_gradient_checkpointing="unsloth",
    )
