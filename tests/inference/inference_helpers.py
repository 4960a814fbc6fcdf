"""Helpers shared by the inference tests: tiny LoRA adapters trained on the spot, request builders."""

from __future__ import annotations

from pathlib import Path

from tutorforge.core.settings import ModelSettings
from tutorforge.v1 import inference_pb2 as pb

PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
# Two adapters unlike each other: different ranks, target modules and training text.
ADAPTERS = {
    "pirate": (4, ["q_proj", "v_proj"], "Arr matey! Ahoy ahoy, the treasure be buried on the island, arr!"),
    "french": (8, ["o_proj", "up_proj", "down_proj"], "Bonjour mes amis! La réponse est toujours le fromage de Paris."),
}


def train_tiny_adapter(models: ModelSettings, folder: Path, rank: int, targets: list[str], text: str) -> Path:
    """A few optimizer steps of LoRA on one sentence: enough to change greedy outputs, in seconds."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tutorforge.core.models import load_chat_model, load_chat_tokenizer

    torch.manual_seed(rank)
    tokenizer = load_chat_tokenizer(models)
    model = get_peft_model(
        load_chat_model(models, dtype=torch.float32),
        LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, lora_dropout=0.0, task_type="CAUSAL_LM"),
    )
    model.train()
    batch = tokenizer([PROMPT + text], return_tensors="pt")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(4):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def generate(prompt: str = PROMPT, adapter: str = "", fallback: bool = False, **parameters: object) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        prompt=prompt,
        model=pb.ModelSelection(adapter=adapter, fallback_to_base=fallback),
        parameters=pb.GenerationParameters(**parameters),
    )


def stream_request(prompt: str = PROMPT, adapter: str = "", **parameters: object) -> pb.GenerateStreamRequest:
    return pb.GenerateStreamRequest(
        prompt=prompt, model=pb.ModelSelection(adapter=adapter), parameters=pb.GenerationParameters(**parameters)
    )
