"""The embedded engine: transformers + peft in this process, one base model with many LoRA adapters.

One scheduler thread runs an iteration-level batching loop over a shared KV cache (left-padded
`DynamicCache`): at every step boundary waiting requests are prefilled together and merged into the
running batch, finished or cancelled rows leave it, and each decode step runs all rows in one forward
pass — rows of different adapters included, through peft's per-row `adapter_names`."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tutorforge.core.adapters import safetensors_header
from tutorforge.core.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from tutorforge.core.models import chat_model_name, load_chat_model, load_chat_tokenizer
from tutorforge.core.settings import Settings
from tutorforge.inference.decoding import IncrementalDecoder, StopMatcher
from tutorforge.inference.structured import JsonConstraint, StructuredDecoding
from tutorforge.inference.types import (
    FinishReason,
    GenerationRequest,
    GenerationStream,
    GenerationSummary,
    SamplingParams,
    TokenEvent,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# peft's name for "no adapter" in a mixed batch.
_PEFT_BASE = "__base__"
# Prompt tokens prefilled in one go when requests join; more joiners wait for the next step, so a burst of
# long prompts cannot stall the running rows for long.
_MAX_PREFILL_TOKENS = 4096


@dataclass
class _Sequence:
    """One request while it is waiting or in the running batch."""

    stream: GenerationStream
    params: SamplingParams
    prompt_ids: list[int]
    adapter: str
    peft_name: str
    decoder: IncrementalDecoder
    stops: StopMatcher
    generator: torch.Generator
    # Set when the request has a structured response_format: masks each step's logits.
    constraint: JsonConstraint | None = None
    generated: int = 0
    first_token_at: float = 0.0
    done: bool = False
    last_token: int = 0

    def emit(self, text: str, token_id: int) -> None:
        if not self.first_token_at:
            self.first_token_at = time.perf_counter()
        self.stream.put(TokenEvent(text=text, token_id=token_id))

    def finish(self, reason: FinishReason) -> None:
        self.done = True
        now = time.perf_counter()
        started = self.stream.submitted_at
        self.stream.put(
            GenerationSummary(
                prompt_tokens=len(self.prompt_ids),
                completion_tokens=self.generated,
                finish_reason=reason,
                adapter=self.adapter,
                time_to_first_token=(self.first_token_at or now) - started,
                duration=now - started,
            )
        )

    def accept(self, token_id: int, end_ids: frozenset[int]) -> None:
        """Take the next sampled token: stream its text, or finish the request."""
        if token_id in end_ids and not self.params.ignore_eos:
            tail = self.stops.feed(self.decoder.flush())
            tail += "" if self.stops.stopped else self.stops.flush()
            if tail:
                self.emit(tail, token_id)
            self.finish("stop")
            return
        self.generated += 1
        self.last_token = token_id
        complete = False
        if self.constraint is not None:
            self.constraint.advance(token_id)
            # The document is finished: end now rather than spend a step on the end token.
            complete = self.constraint.complete
        text = self.stops.feed(self.decoder.push(token_id))
        if self.stops.stopped:
            self.emit(text, token_id)
            self.finish("stop")
        elif complete or self.generated >= self.params.max_tokens:
            text += self.stops.feed(self.decoder.flush())
            text += "" if self.stops.stopped else self.stops.flush()
            self.emit(text, token_id)
            self.finish("stop" if self.stops.stopped or complete else "length")
        else:
            self.emit(text, token_id)


@dataclass
class _Batch:
    """The running rows and their shared, left-padded KV cache."""

    rows: list[_Sequence] = field(default_factory=list)
    cache: Any = None
    # [rows, cached length]: 1 for real tokens, 0 for left padding.
    mask: torch.Tensor | None = None
    # [rows]: position id of each row's next token.
    positions: torch.Tensor | None = None


class EmbeddedEngine:
    kind = "embedded"
    loads_from_registry = True

    def __init__(self, settings: Settings):
        self._settings = settings
        self._limits = settings.inference
        self.base_model = chat_model_name(settings.models)
        self._load_lock = threading.Lock()
        # Held by each forward step, and by adapter loading/unloading in between steps.
        self._model_lock = threading.Lock()
        self._wakeup = threading.Condition()
        self._waiting: deque[_Sequence] = deque()
        self._batch = _Batch()
        self._adapters: dict[str, str] = {}
        self._adapter_counter = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._model: Any = None
        self._peft: Any = None
        self.tokenizer: Any = None
        self._structured: StructuredDecoding | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the model and start the scheduler (done on first use; call early to pay it up front)."""
        with self._load_lock:
            if self._thread is not None:
                return
            import torch

            torch.set_num_threads(max(1, self._limits.threads))
            self.tokenizer = load_chat_tokenizer(self._settings.models)
            self._model = load_chat_model(self._settings.models).eval()
            config = self._model.generation_config
            eos = config.eos_token_id if config is not None else None
            ids = {self.tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])}
            end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
            self._end_ids = frozenset(i for i in (*ids, end) if isinstance(i, int) and i >= 0)
            self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self._end_ids)
            self._context = int(getattr(self._model.config, "max_position_embeddings", 8192))
            self._structured = StructuredDecoding(self.tokenizer)
            self._thread = threading.Thread(target=self._run, name="inference-scheduler", daemon=True)
            self._thread.start()
            log.info("embedded engine ready: %s (%s)", self.base_model, self._model.dtype)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Hold generation between two steps: requests submitted meanwhile join the batch together."""
        self.start()
        with self._model_lock:
            yield

    def close(self) -> None:
        with self._wakeup:
            self._closed = True
            self._wakeup.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ---- requests --------------------------------------------------------------------------------------

    def render(self, request: GenerationRequest) -> list[int]:
        """Prompt token ids: raw prompts as they are, chat messages through the model's ChatML template."""
        self.start()
        if request.messages is not None:
            text = self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        else:
            text = request.prompt or ""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def submit(self, request: GenerationRequest) -> GenerationStream:
        import torch

        prompt_ids = self.render(request)
        params = request.params
        if not prompt_ids:
            raise InvalidArgument("the prompt is empty: send some text to complete")
        if len(prompt_ids) + params.max_tokens > self._context:
            raise InvalidArgument(
                f"prompt ({len(prompt_ids)} tokens) + max_tokens ({params.max_tokens}) exceeds the model's "
                f"context of {self._context} tokens; shorten the prompt or lower max_tokens"
            )
        peft_name = _PEFT_BASE
        if request.adapter:
            peft_name = self._adapters.get(request.adapter, "")
            if not peft_name:
                raise NotFound(f"adapter {request.adapter!r} is not loaded; load it with LoadAdapter")
        # Compiled here, in the caller's thread, so a schema that cannot be enforced is refused at once.
        constraint = None
        if params.response_format is not None and params.response_format.structured:
            constraint = self._structured.constraint(params.response_format)
        seed = params.seed if params.seed is not None else random.getrandbits(63)
        stream = GenerationStream(adapter=request.adapter)
        sequence = _Sequence(
            stream=stream,
            params=params,
            prompt_ids=prompt_ids,
            adapter=request.adapter,
            peft_name=peft_name,
            decoder=IncrementalDecoder(self.tokenizer),
            stops=StopMatcher(params.stop),
            generator=torch.Generator().manual_seed(seed),
            constraint=constraint,
        )
        with self._wakeup:
            if self._closed:
                raise FailedPrecondition("the inference engine is shutting down")
            # A cancelled request still in the queue no longer holds a place.
            waiting = sum(not s.stream.cancelled for s in self._waiting)
            if len(self._batch.rows) + waiting >= self._limits.max_batch_size + self._limits.max_queue_size:
                raise ResourceExhausted(
                    f"the inference queue is full ({len(self._batch.rows)} generating, {waiting} waiting, "
                    f"max_queue_size {self._limits.max_queue_size}); retry with backoff"
                )
            self._waiting.append(sequence)
            self._wakeup.notify()
        return stream

    # ---- adapters --------------------------------------------------------------------------------------

    def load_adapter(self, name: str, path: Path) -> None:
        from peft import PeftModel

        self.start()
        with self._model_lock:
            if name in self._adapters:
                return
            # A mismatch would leave half-injected LoRA layers behind: check every matrix first.
            self._check_shapes(name, path)
            self._adapter_counter += 1
            # peft keeps adapters in ModuleDicts, whose keys may not contain '.', so use an internal key.
            key = f"adapter{self._adapter_counter}"
            try:
                if self._peft is None:
                    self._peft = PeftModel.from_pretrained(self._model, str(path), adapter_name=key, is_trainable=False)
                else:
                    self._peft.load_adapter(str(path), adapter_name=key, is_trainable=False)
            except (ValueError, KeyError, RuntimeError, OSError) as error:
                raise FailedPrecondition(f"adapter {name!r} cannot be loaded on {self.base_model}: {error}") from error
            self._peft.eval()
            self._adapters[name] = key

    def _check_shapes(self, name: str, path: Path) -> None:
        modules = dict(self._model.named_modules())
        for tensor, info in safetensors_header(Path(path) / "adapter_model.safetensors").items():
            for part, axis, attribute in ((".lora_A.", 1, "in_features"), (".lora_B.", 0, "out_features")):
                if part not in tensor:
                    continue
                module_name = tensor.removeprefix("base_model.model.").split(part)[0]
                module = modules.get(module_name)
                expected = getattr(module, attribute, None)
                if expected is None or info["shape"][axis] != expected:
                    raise FailedPrecondition(
                        f"adapter {name!r} does not fit {self.base_model}: {tensor} has shape {info['shape']}, "
                        f"but the base model's {module_name} {'is missing' if module is None else f'has {attribute}={expected}'}; "
                        "was it trained on another base model?"
                    )

    def unload_adapter(self, name: str) -> None:
        with self._wakeup:
            busy = [s for s in (*self._batch.rows, *self._waiting) if s.adapter == name and not s.done]
        if busy:
            raise FailedPrecondition(
                f"adapter {name!r} is answering {len(busy)} request(s); unload it when they have finished"
            )
        with self._model_lock:
            key = self._adapters.pop(name, None)
            if key is None:
                raise NotFound(f"adapter {name!r} is not loaded")
            if self._adapters:
                self._peft.delete_adapter(key)
            else:
                # Last adapter gone: take the LoRA layers out, so base-only batches run the plain model.
                self._model = self._peft.unload()
                self._peft = None

    def loaded_adapters(self) -> list[str]:
        return sorted(self._adapters)

    # ---- scheduler -------------------------------------------------------------------------------------

    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self._wakeup:
                    while not self._closed and not self._waiting and not self._batch.rows:
                        self._wakeup.wait()
                    if self._closed:
                        break
                    joining = self._take_joining()
                try:
                    with self._model_lock:
                        if joining:
                            self._prefill(joining)
                        if self._batch.rows:
                            self._decode_step()
                except Exception as error:  # a failed step fails its requests, never the server
                    log.exception("generation step failed")
                    for sequence in [*self._batch.rows, *joining]:
                        if not sequence.done:
                            sequence.done = True
                            sequence.stream.put(error)
                    self._batch = _Batch()
        for sequence in [*self._batch.rows, *self._waiting]:
            if not sequence.done:
                sequence.finish("cancelled")

    def _take_joining(self) -> list[_Sequence]:
        joining: list[_Sequence] = []
        budget = _MAX_PREFILL_TOKENS
        while self._waiting and len(self._batch.rows) + len(joining) < self._limits.max_batch_size:
            sequence = self._waiting[0]
            if sequence.stream.cancelled:
                self._waiting.popleft()
                sequence.finish("cancelled")
                continue
            if joining and len(sequence.prompt_ids) > budget:
                break
            budget -= len(sequence.prompt_ids)
            joining.append(self._waiting.popleft())
        return joining

    def _forward(self, rows: list[_Sequence], **inputs: Any) -> torch.Tensor:
        if self._peft is not None:
            inputs["adapter_names"] = [row.peft_name for row in rows]
            output = self._peft(**inputs, use_cache=True, logits_to_keep=1)
        else:
            output = self._model(**inputs, use_cache=True, logits_to_keep=1)
        return output.logits[:, -1, :]

    def _prefill(self, joining: list[_Sequence]) -> None:
        import torch
        from transformers import DynamicCache

        width = max(len(s.prompt_ids) for s in joining)
        ids = torch.full((len(joining), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(joining), width), dtype=torch.long)
        for row, sequence in enumerate(joining):
            ids[row, width - len(sequence.prompt_ids) :] = torch.tensor(sequence.prompt_ids)
            mask[row, width - len(sequence.prompt_ids) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self._model.config)
        logits = self._forward(joining, input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache)
        joined = _Batch(rows=joining, cache=cache, mask=mask, positions=positions[:, -1] + 1)
        self._merge(joined)
        self._accept(logits, joining)

    def _merge(self, joined: _Batch) -> None:
        """Append the freshly prefilled rows to the running batch, left-padding the shorter cache."""
        import torch

        batch = self._batch
        if not batch.rows:
            self._batch = joined
            return
        width = max(batch.mask.shape[1], joined.mask.shape[1])

        def pad(tensor: torch.Tensor, dim: int) -> torch.Tensor:
            missing = width - tensor.shape[dim]
            if missing == 0:
                return tensor
            shape = list(tensor.shape)
            shape[dim] = missing
            return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)

        for ours, theirs in zip(batch.cache.layers, joined.cache.layers, strict=True):
            ours.keys = torch.cat([pad(ours.keys, 2), pad(theirs.keys, 2)])
            ours.values = torch.cat([pad(ours.values, 2), pad(theirs.values, 2)])
        batch.mask = torch.cat([pad(batch.mask, 1), pad(joined.mask, 1)])
        batch.positions = torch.cat([batch.positions, joined.positions])
        batch.rows = batch.rows + joined.rows

    def _decode_step(self) -> None:
        import torch

        batch = self._batch
        rows = batch.rows
        tokens = torch.tensor([[row.last_token] for row in rows], dtype=torch.long)
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(rows), 1))], dim=1)
        logits = self._forward(
            rows,
            input_ids=tokens,
            attention_mask=batch.mask,
            position_ids=batch.positions[:, None],
            past_key_values=batch.cache,
        )
        batch.positions = batch.positions + 1
        self._accept(logits, rows)

    def _accept(self, logits: torch.Tensor, rows: list[_Sequence]) -> None:
        """Sample each row's next token, stream it, and drop finished or cancelled rows from the batch."""
        for index, row in enumerate(rows):
            if row.constraint is not None:
                row.constraint.mask(logits[index])
        tokens = logits.argmax(dim=-1).tolist()
        for index, row in enumerate(rows):
            if not row.params.greedy:
                tokens[index] = _sample(logits[index], row.params, row.generator)
        for row, token in zip(rows, tokens, strict=True):
            if row.stream.cancelled:
                row.finish("cancelled")
            else:
                row.accept(token, self._end_ids)
        self._drop_finished()

    def _drop_finished(self) -> None:
        import torch

        batch = self._batch
        keep = [index for index, row in enumerate(batch.rows) if not row.done]
        if len(keep) == len(batch.rows):
            return
        if not keep:
            self._batch = _Batch()
            return
        index = torch.tensor(keep, dtype=torch.long)
        mask = batch.mask[index]
        # Columns that are padding for every remaining row are dead weight in each attention step.
        start = int(mask.any(dim=0).long().argmax())
        for layer in batch.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]
        batch.mask = mask[:, start:]
        batch.positions = batch.positions[index]
        batch.rows = [batch.rows[i] for i in keep]


def _sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    import torch

    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # Keep the smallest set of most likely tokens whose mass reaches top_p.
        outside = sorted_probs.cumsum(-1) - sorted_probs >= params.top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))
