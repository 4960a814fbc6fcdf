"""`bench/inference.py`'s reference rows: plain transformers / peft `generate` on the same prompts, in the
same process, with the dtype and torch threads the embedded engine chose, and the engine's ratios to them.

- one at a time: `model.generate` at batch 1 for each prompt in turn (what a script without a server does);
- static batch (base): all prompts in one left-padded `generate` call;
- static batch (base + 2 adapters): one peft `generate` with per-row `adapter_names` (base rows `__base__`).

Every call asks for exactly N new tokens (`min_new_tokens`), greedy, as the engine's rows do. The
embedded server is stopped before these run, so both sides had the CPU alike."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from tutorforge.core.models import load_chat_model, load_chat_tokenizer
from tutorforge.core.settings import Settings

Row = dict[str, float]


def _generate(model, tokenizer, prompts: list[str], tokens: int, **extra) -> int:
    import torch

    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        output = model.generate(
            **batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id, **extra
        )
    return (output.shape[1] - batch["input_ids"].shape[1]) * len(prompts)


def _row(name: str, run: Callable[[], int]) -> Row:
    started = time.perf_counter()
    total = run()
    wall = time.perf_counter() - started
    print(f"{name:<44} {total / wall:8.1f} tok/s   {total} tokens in {wall:6.1f} s", flush=True)
    return {"tokens_per_s": total / wall}


def run(
    settings: Settings, adapters: dict[str, Path], prompt: Callable[[int], str], requests: int, tokens: int,
    dtype: str, threads: int,
) -> dict[str, Row]:
    import torch
    from peft import PeftModel

    torch.set_num_threads(threads)
    tokenizer = load_chat_tokenizer(settings.models)
    tokenizer.padding_side = "left"
    model = load_chat_model(settings.models, dtype=getattr(torch, dtype)).eval()
    prompts = [prompt(i) for i in range(requests)]
    print(f"plain transformers {dtype}, {threads} thread(s):", flush=True)
    rows = {
        "alone": _row("  generate batch 1, one at a time", lambda: sum(_generate(model, tokenizer, [p], tokens) for p in prompts)),
        "base": _row(f"  generate static batch of {requests} (base)", lambda: _generate(model, tokenizer, prompts, tokens)),
    }
    names = list(adapters)
    peft = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        peft.load_adapter(str(adapters[name]), adapter_name=name)
    peft.eval()
    # The engine's mixed scenario: request i uses ["", adapter 1, adapter 2][i % 3].
    per_row = [(["__base__", *names])[i % (len(names) + 1)] for i in range(requests)]
    rows["mixed"] = _row(
        f"  peft static batch of {requests} (base + {len(names)} adapters)",
        lambda: _generate(peft, tokenizer, prompts, tokens, adapter_names=per_row),
    )
    return rows


def print_comparison(embedded: dict[str, Row], baseline: dict[str, Row]) -> None:
    labels = {"alone": "one at a time", "base": "concurrent base vs static batch", "mixed": "concurrent mixed vs peft static batch"}
    print("embedded engine / plain transformers (tok/s ratio):")
    for key, label in labels.items():
        ratio = embedded[key]["tokens_per_s"] / baseline[key]["tokens_per_s"]
        print(f"  {label:<40} {ratio:5.2f}x   (TTFT p50 {embedded[key]['ttft_p50']:.2f} s)", flush=True)


class EngineChoice(logging.Handler):
    """Picks up the dtype/threads the embedded engine chose (its start-up log record carries `choice`)."""

    def __init__(self) -> None:
        super().__init__()
        self.choice = None
        engine_log = logging.getLogger("tutorforge.inference.embedded")
        engine_log.setLevel(logging.INFO)
        engine_log.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.choice = getattr(record, "choice", self.choice)

    def dtype_threads(self, settings: Settings) -> tuple[str, int]:
        """The engine's choice; an engine that reports none ran what the settings say."""
        if self.choice is not None:
            return self.choice.dtype, self.choice.threads
        from tutorforge.core.models import torch_dtype

        return str(torch_dtype(settings.models)).removeprefix("torch."), max(1, settings.inference.threads)

    def describe(self) -> str:
        return self.choice.describe() if self.choice is not None else "(no start-up choice reported)"
