"""The embedded engine: one base model with many LoRA adapters, in this process.

One scheduler thread runs an iteration-level batching loop. Every running request owns a slot of a
pre-allocated KV cache (`kvcache.SlotCache`); each iteration first prefills joiners' prompts in chunks
under a token budget (so a burst of long prompts cannot stall the running rows), then runs one decode
step over all decoding rows in one forward pass — rows of different adapters included. The forward is
`runtime.LeanLlama`: the model's own weights, fused, with LoRA applied per row group. Prompt beginnings
shared by many requests (the tutor's system prompt) come from a prefix cache instead of being prefilled
again. Dtype and torch threads are picked by a short measurement at start-up (`tuning.py`) unless set."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tutorforge.artifacts.adapters import safetensors_header
from tutorforge.core import heap
from tutorforge.core.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from tutorforge.core.models import chat_model_name, load_chat_model, load_chat_tokenizer
from tutorforge.core.settings import Settings
from tutorforge.inference import kernels, tuning
from tutorforge.inference.decoding import IncrementalDecoder, StopMatcher
from tutorforge.inference.kvcache import PrefixCache, SlotCache
from tutorforge.inference.runtime import LeanLlama, release_memory
from tutorforge.inference.structured import JsonConstraint, StructuredDecoding
from tutorforge.inference.types import (
    FinishReason,
    GenerationRequest,
    GenerationStream,
    GenerationSummary,
    SamplingParams,
    TokenEvent,
    TokenLogprob,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Decode steps timed per candidate at start-up: batch 1 and this many rows (capped by max_batch_size).
_PROBE_ROWS = 16
# A KV cache grown past this size is given back once the engine has been idle for _SHRINK_AFTER_IDLE_S —
# not as soon as the last row finishes: a burst right behind it would pay for regrowing the cache and
# for the heap trim before its first token (measured: +0.3 s TTFT on back-to-back 16-request bursts).
_SHRINK_ABOVE_BYTES = 64 * 2**20
_SHRINK_AFTER_IDLE_S = 5.0


@dataclass
class _Sequence:
    """One request while it is waiting, being prefilled, or decoding."""

    stream: GenerationStream
    params: SamplingParams
    prompt_ids: list[int]
    adapter: str
    # The runtime's key of the adapter ("" = the base model).
    key: str
    decoder: IncrementalDecoder
    stops: StopMatcher
    generator: torch.Generator
    # Set when the request has a structured response_format: masks each step's logits.
    constraint: JsonConstraint | None = None
    generated: int = 0
    first_token_at: float = 0.0
    done: bool = False
    last_token: int = 0
    # Its slot in the KV cache (-1 until placed) and how many columns of it are filled.
    slot: int = -1
    length: int = 0
    # Prompt length to keep in the prefix cache once prefilled (0 = nothing).
    store_prefix: int = 0
    # How often each token occurs in the reply so far; kept only for requests with a penalty.
    counts: dict[int, int] | None = None

    @property
    def prefilling(self) -> bool:
        return self.length < len(self.prompt_ids)

    @property
    def plain_greedy(self) -> bool:
        """Greedy with nothing that needs the whole vocabulary's logits (a penalty, a response_format
        mask, logprobs): its token may come from a screening head (LeanLlama.greedy_tokens)."""
        return self.params.greedy and self.counts is None and self.constraint is None and self.params.logprobs is None

    def emit(self, text: str, token_id: int, logprobs: tuple[TokenLogprob, ...] = ()) -> None:
        if not self.first_token_at:
            self.first_token_at = time.perf_counter()
        self.stream.put(TokenEvent(text=text, token_id=token_id, logprobs=logprobs))

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

    def accept(self, token_id: int, end_ids: frozenset[int], logprob: TokenLogprob | None = None) -> None:
        """Take the next sampled token: stream its text (with its logprob when asked for), or finish the
        request (the end token is not part of the reply, so it carries no logprob)."""
        if token_id in end_ids and not self.params.ignore_eos:
            tail = self.stops.feed(self.decoder.flush())
            tail += "" if self.stops.stopped else self.stops.flush()
            if tail:
                self.emit(tail, token_id)
            self.finish("stop")
            return
        self.generated += 1
        self.last_token = token_id
        if self.counts is not None:
            self.counts[token_id] = self.counts.get(token_id, 0) + 1
        logprobs = () if logprob is None else (logprob,)
        complete = False
        if self.constraint is not None:
            self.constraint.advance(token_id)
            # The document is finished: end now rather than spend a step on the end token.
            complete = self.constraint.complete
        text = self.stops.feed(self.decoder.push(token_id))
        if self.stops.stopped:
            self.emit(text, token_id, logprobs)
            self.finish("stop")
        elif complete or self.generated >= self.params.max_tokens:
            text += self.stops.feed(self.decoder.flush())
            text += "" if self.stops.stopped else self.stops.flush()
            self.emit(text, token_id, logprobs)
            self.finish("stop" if self.stops.stopped or complete else "length")
        else:
            self.emit(text, token_id, logprobs)

    def penalize(self, logits: torch.Tensor) -> None:
        """Lower, in place, the logits of the tokens the reply holds by OpenAI's frequency and presence
        penalties: one indexed update over the reply's distinct tokens."""
        import torch

        ids = torch.tensor(list(self.counts))
        counts = torch.tensor(list(self.counts.values()), dtype=logits.dtype)
        logits[ids] -= counts * self.params.frequency_penalty + self.params.presence_penalty


class EmbeddedEngine:
    kind = "embedded"
    loads_from_registry = True
    reports_logprobs = True

    def __init__(self, settings: Settings):
        self._settings = settings
        self._limits = settings.inference
        self.base_model = chat_model_name(settings.models)
        self._load_lock = threading.Lock()
        # Held by each scheduler iteration, and by adapter loading/unloading in between.
        self._model_lock = threading.Lock()
        self._wakeup = threading.Condition()
        self._waiting: deque[_Sequence] = deque()
        # Admitted requests (prefilling or decoding), at most max_batch_size.
        self._running: list[_Sequence] = []
        self._adapters: dict[str, str] = {}
        self._adapter_counter = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._lean: LeanLlama | None = None
        self._cache: SlotCache | None = None
        self._prefixes: PrefixCache | None = None
        self.tokenizer: Any = None
        self._structured: StructuredDecoding | None = None
        # The dtype/threads in use and why (logged at start-up).
        self.choice: tuning.Choice | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the model and start the scheduler (done on first use; call early to pay it up front)."""
        with self._load_lock:
            if self._thread is not None:
                return
            self.tokenizer = load_chat_tokenizer(self._settings.models)
            self._lean, self.choice = self._load()
            self._cache = self._new_cache()
            self._prefixes = PrefixCache(self._limits.prefix_cache_mb * 2**20)
            self._structured = StructuredDecoding(self.tokenizer)
            heap.settle()  # the model and tokenizer tables stay out of later full collections
            self._thread = threading.Thread(target=self._run, name="inference-scheduler", daemon=True)
            self._thread.start()
            log.info(
                "embedded engine ready: %s, %s%s",
                self.base_model,
                self.choice.describe(),
                ", int8 weights" if self._lean.quantized else "",
                extra={"choice": self.choice},
            )

    def _load(self) -> tuple[LeanLlama, tuning.Choice]:
        """The model in the dtype and with the torch threads that measured fastest (or as set).

        The float32 weights are loaded once and cast in place for the next candidate, so one copy of
        the model is in memory at a time."""
        import torch

        quantize = self._limits.quantize == "int8"
        # int8 kernels take float32 activations.
        dtypes, threads = tuning.candidates("float32" if quantize else self._settings.models.dtype, self._limits.threads)
        rows = min(_PROBE_ROWS, self._limits.max_batch_size)
        timings: dict[tuple[str, int], tuple[float, float]] = {}
        lean = self._build()
        if quantize:
            # The threads are timed on the int8 steps that will be served (their kernels scale differently).
            lean.quantize()
        attention = None
        if self._limits.attention_kernel == "native":
            attention = kernels.load_decode_attention(Path(self._settings.models.cache_dir) / "kernels")
        lean.decode_attention = attention
        if len(dtypes) * len(threads) > 1:
            # float32 first: casting down is exact, casting back up is not.
            with torch.inference_mode():
                for dtype in sorted(dtypes, key=lambda name: name != "float32"):
                    if lean.dtype != tuning.dtype_of(dtype):
                        lean.to_dtype(tuning.dtype_of(dtype))
                    cache = SlotCache(lean.layers_count, lean.kv_heads, lean.head_dim, lean.cache_dtype, rows, 128)
                    for _ in range(rows):
                        cache.take()
                    for count in threads:
                        tuning.set_threads(count)
                        timings[(dtype, count)] = tuning.time_steps(partial(self._probe, lean, cache), rows)
        dtype, count = tuning.pick(timings, rows) if timings else (dtypes[0], threads[0])
        tuning.set_threads(count)
        if lean.dtype != tuning.dtype_of(dtype):
            if dtype == "float32":
                lean = None  # free the cast candidate before loading float32 again
                lean = self._build()
                lean.decode_attention = attention
            else:
                lean.to_dtype(tuning.dtype_of(dtype))
        # Unfused weights and candidates were freed: hand their pages back to the OS.
        release_memory()
        chosen_by_settings = self._limits.threads > 0 and (quantize or self._settings.models.dtype != "auto")
        source = "measured" if timings else "set in settings" if chosen_by_settings else "the only candidate"
        named = {f"{d} x{n}": t for (d, n), t in timings.items()}
        if attention is not None and not attention.supports(lean.dtype):
            # The kernel is float32 only (kernels.py): a bfloat16 engine keeps SDPA.
            attention = lean.decode_attention = None
        kernel = "native" if attention is not None else "sdpa"
        return lean, tuning.Choice(dtype=dtype, threads=count, source=source, timings=named, attention=kernel)

    def _build(self) -> LeanLlama:
        import torch

        # The lean forward and its slot cache are CPU code (load_chat_model moves to CUDA when present).
        model = load_chat_model(self._settings.models, dtype=torch.float32).to("cpu").eval()
        config = model.generation_config
        eos = config.eos_token_id if config is not None else None
        ids = {self.tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])}
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self._end_ids = frozenset(i for i in (*ids, end) if isinstance(i, int) and i >= 0)
        self._context = int(getattr(model.config, "max_position_embeddings", 8192))
        return LeanLlama(model)

    @staticmethod
    def _probe(lean: LeanLlama, cache: SlotCache, rows: int) -> None:
        """One decode step of `rows` rows at 64 cached columns (what the start-up measurement times)."""
        import torch

        lengths = torch.full((rows,), 64)
        hidden = lean.forward(
            torch.zeros((rows, 1), dtype=torch.long), lengths[:, None], cache, torch.arange(rows), lengths, [], 65, None, False
        )
        if lean.screen is not None:
            lean.greedy_tokens(hidden)
        else:
            lean.logits(hidden).argmax(dim=-1).tolist()

    def _new_cache(self) -> SlotCache:
        lean = self._lean
        return SlotCache(lean.layers_count, lean.kv_heads, lean.head_dim, lean.cache_dtype, self._limits.max_batch_size)

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
        key = ""
        if request.adapter:
            key = self._adapters.get(request.adapter, "")
            if not key:
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
            key=key,
            decoder=IncrementalDecoder(self.tokenizer),
            stops=StopMatcher(params.stop),
            generator=torch.Generator().manual_seed(seed),
            constraint=constraint,
            counts={} if params.penalized else None,
        )
        with self._wakeup:
            if self._closed:
                raise FailedPrecondition("the inference engine is shutting down")
            # A cancelled request still in the queue no longer holds a place.
            waiting = sum(not s.stream.cancelled for s in self._waiting)
            if len(self._running) + waiting >= self._limits.max_batch_size + self._limits.max_queue_size:
                raise ResourceExhausted(
                    f"the inference queue is full ({len(self._running)} generating, {waiting} waiting, "
                    f"max_queue_size {self._limits.max_queue_size}); retry with backoff"
                )
            self._waiting.append(sequence)
            self._wakeup.notify()
        return stream

    # ---- adapters --------------------------------------------------------------------------------------

    def load_adapter(self, name: str, path: Path) -> None:
        self.start()
        with self._model_lock:
            if name in self._adapters:
                return
            # Check every matrix before anything is kept: a mismatch names the module at fault.
            self._check_shapes(name, path)
            self._adapter_counter += 1
            key = f"adapter{self._adapter_counter}"
            try:
                self._lean.add_adapter(key, path)
            except (ValueError, KeyError, RuntimeError, OSError, json.JSONDecodeError) as error:
                raise FailedPrecondition(f"adapter {name!r} cannot be loaded on {self.base_model}: {error}") from error
            self._adapters[name] = key

    def _check_shapes(self, name: str, path: Path) -> None:
        shapes = self._lean.shapes
        for tensor, info in safetensors_header(Path(path) / "adapter_model.safetensors").items():
            for part, axis, position in ((".lora_A.", 1, 0), (".lora_B.", 0, 1)):
                if part not in tensor:
                    continue
                module_name = tensor.removeprefix("base_model.model.").split(part)[0]
                shape = shapes.get(module_name)
                expected = shape[position] if shape is not None else None
                if expected is None or info["shape"][axis] != expected:
                    attribute = ("in_features", "out_features")[position]
                    raise FailedPrecondition(
                        f"adapter {name!r} does not fit {self.base_model}: {tensor} has shape {info['shape']}, "
                        f"but the base model's {module_name} {'is missing' if shape is None else f'has {attribute}={expected}'}; "
                        "was it trained on another base model?"
                    )

    def unload_adapter(self, name: str) -> None:
        with self._wakeup:
            busy = [s for s in (*self._running, *self._waiting) if s.adapter == name and not s.done]
        if busy:
            raise FailedPrecondition(
                f"adapter {name!r} is answering {len(busy)} request(s); unload it when they have finished"
            )
        with self._model_lock:
            key = self._adapters.pop(name, None)
            if key is None:
                raise NotFound(f"adapter {name!r} is not loaded")
            self._lean.remove_adapter(key)
            self._prefixes.drop(key)

    def loaded_adapters(self) -> list[str]:
        return sorted(self._adapters)

    def occupancy(self) -> tuple[int, int, int]:
        """(requests waiting, requests in the running batch, KV-cache tokens held) for the metrics scrape.
        Read without locks: a snapshot that may be one step old."""
        running = list(self._running)
        return len(self._waiting), len(running), sum(row.length for row in running)

    # ---- scheduler -------------------------------------------------------------------------------------

    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self._wakeup:
                    while not self._closed and not self._waiting and not self._running:
                        grown = self._cache.nbytes() > _SHRINK_ABOVE_BYTES
                        if not self._wakeup.wait(_SHRINK_AFTER_IDLE_S if grown else None) and grown and not self._waiting:
                            self._cache = self._new_cache()
                            release_memory()
                    if self._closed:
                        break
                    self._admit()
                try:
                    with self._model_lock:
                        self._step()
                except Exception as error:  # a failed step fails its requests, never the server
                    log.exception("generation step failed")
                    for sequence in self._running:
                        if not sequence.done:
                            sequence.done = True
                            sequence.stream.put(error)
                    self._running = []
                    self._cache = self._new_cache()
        for sequence in [*self._running, *self._waiting]:
            if not sequence.done:
                sequence.finish("cancelled")

    def _admit(self) -> None:
        """Move waiting requests into the running set while it has room (caller holds `_wakeup`)."""
        while self._waiting and len(self._running) < self._limits.max_batch_size:
            sequence = self._waiting.popleft()
            if sequence.stream.cancelled:
                sequence.finish("cancelled")
            else:
                self._running.append(sequence)

    def _step(self) -> None:
        """One iteration: prefill joiners under the token budget, then one decode step for the rest."""
        budget = self._limits.prefill_chunk_tokens
        self._cache.reserve(len(self._running))
        chunks: dict[int, list[tuple[_Sequence, int]]] = {}
        for row in self._running:
            if budget <= 0:
                break
            if row.done or not row.prefilling:
                continue
            if row.stream.cancelled:
                row.finish("cancelled")
                continue
            if row.slot < 0:
                self._place(row)
            width = min(len(row.prompt_ids) - row.length, budget)
            chunks.setdefault(row.length, []).append((row, width))
            budget -= width
        # Joiners whose chunks start at the same column (a burst of new requests, or the same cached
        # prefix) are prefilled in one forward: one pass over the weights instead of one per joiner.
        for start, rows in chunks.items():
            self._prefill(rows, start)
        decoding = sorted((row for row in self._running if not row.done and not row.prefilling), key=lambda r: r.slot)
        if decoding:
            self._decode(decoding)
        self._drop_finished()

    def _place(self, row: _Sequence) -> None:
        """Give a joiner a cache slot, filled with the longest cached prefix of its prompt."""
        row.slot = self._cache.take()
        prefix, length = self._prefixes.lookup(row.prompt_ids, row.key)
        if prefix is not None:
            self._cache.load(row.slot, prefix)
            row.length = length
        row.store_prefix = self._prefixes.wants(row.prompt_ids, row.key, row.length)

    def _prefill(self, chunks: list[tuple[_Sequence, int]], start: int) -> None:
        """Prefill the next chunk — (row, width) — of each row's prompt from column `start`, in one forward
        (shorter chunks padded at the end: causal attention keeps the padding out of the real positions,
        and the padding's cache columns lie past the row's length, written over by its later tokens);
        sample the first token of each row whose prompt is then complete."""
        import torch

        rows = [row for row, _ in chunks]
        widths = [width for _, width in chunks]
        widest = max(widths)
        tokens = [row.prompt_ids[start : start + width] + [0] * (widest - width) for row, width in chunks]
        self._cache.ensure(start + widest)
        positions = torch.arange(start, start + widest)
        mask = None
        if start:
            # The chunk sees the cached columns and, causally, itself.
            mask = (torch.arange(start + widest)[None, :] <= positions[:, None])[None, None]
        hidden = self._lean.forward(
            torch.tensor(tokens), positions.expand(len(rows), widest), self._cache,
            torch.tensor([row.slot for row in rows]), torch.full((len(rows),), start),
            self._lean.groups([row.key for row in rows]), start + widest, mask, causal=not start,
            last=torch.tensor(widths) - 1,
        )
        complete = []
        for index, (row, width) in enumerate(chunks):
            row.length += width
            if not row.prefilling:
                complete.append(index)
                if row.store_prefix:
                    self._prefixes.store(row.prompt_ids, row.key, self._cache.export(row.slot, row.store_prefix))
        if complete:
            self._accept(hidden[complete], [rows[index] for index in complete])

    def _decode(self, rows: list[_Sequence]) -> None:
        import torch

        lengths = torch.tensor([row.length for row in rows])
        longest = int(lengths.max()) + 1
        self._cache.ensure(longest)
        mask = None
        if int(lengths.min()) + 1 != longest:
            # Rows of different lengths: each sees its own columns only.
            mask = (torch.arange(longest)[None, :] <= lengths[:, None])[:, None, None, :]
        hidden = self._lean.forward(
            torch.tensor([[row.last_token] for row in rows]), lengths[:, None], self._cache,
            torch.tensor([row.slot for row in rows]), lengths, self._lean.groups([row.key for row in rows]),
            longest, mask, causal=False,
        )
        for row in rows:
            row.length += 1
        self._accept(hidden, rows)

    def _accept(self, hidden: torch.Tensor, rows: list[_Sequence]) -> None:
        """Pick each row's next token from its hidden state and stream it (or finish the row)."""
        tokens: list[int] = [0] * len(rows)
        logprobs: list[TokenLogprob | None] = [None] * len(rows)
        screened = [i for i, row in enumerate(rows) if row.plain_greedy] if self._lean.screen is not None else []
        if screened:
            picked = self._lean.greedy_tokens(hidden if len(screened) == len(rows) else hidden[screened])
            for index, token in zip(screened, picked, strict=True):
                tokens[index] = token
        rest = sorted(set(range(len(rows))) - set(screened))
        if rest:
            scored = hidden if len(rest) == len(rows) else hidden[rest]
            chosen = self._choose(self._lean.logits(scored), [rows[index] for index in rest])
            for index, (token, logprob) in zip(rest, chosen, strict=True):
                tokens[index], logprobs[index] = token, logprob
        for row, token, logprob in zip(rows, tokens, logprobs, strict=True):
            if row.stream.cancelled:
                row.finish("cancelled")
            else:
                row.accept(token, self._end_ids, logprob)

    def _choose(self, logits: torch.Tensor, rows: list[_Sequence]) -> list[tuple[int, TokenLogprob | None]]:
        """Each row's next token from its logits (argmax, or sampled), with its logprobs when asked for."""
        # float32 as transformers' generate takes them (exact: every bf16 value is a float32 value);
        # and argmax over bf16 measured 6x slower than the cast plus argmax over float32.
        logits = logits.float()
        # Penalized rows that report logprobs keep the model's own logits for them (see _logprob).
        unpenalized: dict[int, torch.Tensor] = {}
        for index, row in enumerate(rows):
            if row.constraint is not None:
                row.constraint.mask(logits[index])
            # Empty until the reply has a token; None (no cost) for rows without a penalty.
            if row.counts:
                if row.params.logprobs is not None:
                    unpenalized[index] = logits[index].clone()
                row.penalize(logits[index])
        tokens = logits.argmax(dim=-1).tolist()
        for index, row in enumerate(rows):
            if not row.params.greedy:
                tokens[index] = _sample(logits[index], row.params, row.generator)
        wanted = [row.params.logprobs for row in rows]
        return [
            (token, None if top is None else self._logprob(unpenalized.get(index, logits[index]), token, top))
            for index, (token, top) in enumerate(zip(tokens, wanted, strict=True))
        ]

    def _logprob(self, logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
        """The chosen token's log probability under the model's distribution (before frequency/presence
        penalties and temperature/top_p, after a response_format mask; as vLLM's default raw logprobs) and
        the `top` most likely tokens, most likely first. Only rows that asked for logprobs pay for the
        log-softmax."""
        import torch

        logprobs = torch.log_softmax(logits, dim=-1)
        values, ids = logprobs.topk(top)
        decode = self.tokenizer.decode
        return TokenLogprob(
            token=decode([token]),
            logprob=float(logprobs[token]),
            top=tuple((decode([i]), v) for i, v in zip(ids.tolist(), values.tolist(), strict=True)),
        )

    def _drop_finished(self) -> None:
        """Free finished rows' slots, and move the highest rows down into them so the running rows keep
        a contiguous slot range (one view of the cache per step instead of a gather)."""
        finished = [row for row in self._running if row.done]
        if not finished:
            return
        for row in finished:
            if row.slot >= 0:
                self._cache.release(row.slot)
        with self._wakeup:
            self._running = [row for row in self._running if not row.done]
        placed = [row for row in self._running if row.slot >= 0]
        taken = {row.slot for row in placed}
        for target in (slot for slot in range(len(placed)) if slot not in taken):
            highest = max(placed, key=lambda r: r.slot)
            self._cache.move(highest.slot, target, highest.length)
            highest.slot = target


def _sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    import torch

    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # Keep the smallest set of most likely tokens whose mass reaches top_p.
        outside = sorted_probs.cumsum(-1) - sorted_probs >= params.top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))
