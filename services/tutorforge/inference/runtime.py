"""A lean forward pass for Llama-family models, built from the transformers model's own weights.

Why not call the transformers model per step: at this size (135M parameters, 30 thin layers) a decode
step is dominated by per-op overhead — mask building, cache bookkeeping, peft's per-layer adapter
routing — not by the matmuls. Here each layer is a handful of ops over fused weights (q/k/v in one
matmul, gate/up in one), the KV cache is a pre-allocated slot cache (`kvcache.SlotCache`) written in
place, and LoRA adapters are applied per row group with two small matmuls each.

Numerics follow transformers' Llama exactly (same RMSNorm order, the model's own rotary module, SDPA
with the same GQA and causal choices), so a request alone gives the same greedy tokens as
`model.generate` on the same dtype."""

from __future__ import annotations

import gc
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tutorforge.core.errors import FailedPrecondition
from tutorforge.core.models import cpu_supports_bf16

if TYPE_CHECKING:
    import torch

    from tutorforge.inference.kernels import DecodeAttention
    from tutorforge.inference.kvcache import SlotCache

# Module names inside a Llama decoder layer that LoRA adapters may target.
ATTENTION = ("q_proj", "k_proj", "v_proj")
MLP_IN = ("gate_proj", "up_proj")
TARGETS = (*ATTENTION, "o_proj", *MLP_IN, "down_proj")
_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")
# Candidates per greedy row that the int8 engine's screening head passes to the float head (greedy_tokens).
# On 800 tutor-reply positions the float32 head's token was within the screen's top 8 every time.
SCREENED_CANDIDATES = 16


@dataclass
class LoraWeights:
    """One adapter's matrices per (layer, module): A [r, in], B [out, r] and the scale alpha / r."""

    modules: dict[tuple[int, str], tuple[Any, Any, float]] = field(default_factory=dict)


class _Group:
    """Rows of one adapter in the current batch: a slice when they are contiguous, else an index."""

    def __init__(self, lora: LoraWeights, rows: list[int], total: int):
        import torch

        self.lora = lora
        contiguous = rows == list(range(rows[0], rows[0] + len(rows)))
        self.all = len(rows) == total
        self.slice = slice(rows[0], rows[0] + len(rows)) if contiguous else None
        self.index = None if contiguous else torch.tensor(rows, dtype=torch.long)


class LeanLlama:
    """Fused weights and a forward pass over a slot cache; LoRA adapters kept beside the base weights."""

    def __init__(self, model: Any):
        import torch

        config = model.config
        if getattr(config, "model_type", "") not in _ARCHITECTURES:
            raise FailedPrecondition(
                f"the embedded engine serves Llama-family models ({', '.join(_ARCHITECTURES)}); "
                f"{getattr(config, 'model_type', '?')!r} is not one: set inference.engine to openai or tgi for it"
            )
        self.config = config
        self.dtype = model.dtype
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.layers_count = config.num_hidden_layers
        self.scale = self.head_dim**-0.5
        self.quantized = False
        # The int8 engine's int8 copy of the head, which shortlists greedy rows' tokens (greedy_tokens).
        self.screen: Any = None
        # (in, out) features of every Linear, by module name: adapters are checked against it.
        self.shapes = {
            name: (module.in_features, module.out_features)
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)
        }
        inner = model.model
        self.rotary = inner.rotary_emb
        self.embed = inner.embed_tokens.weight.detach()
        self.norm = inner.norm
        # Tied (as in SmolLM2): the head is the embedding itself, one copy in memory.
        self.tied = model.lm_head.weight is inner.embed_tokens.weight
        self.head = None if self.tied else model.lm_head.weight.detach()
        q_size = self.heads * self.head_dim
        kv_size = self.kv_heads * self.head_dim
        self.splits = (q_size, kv_size, kv_size)
        self.layers = []
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            if getattr(attn, "q_norm", None) is not None:
                raise FailedPrecondition("models with q/k norms are not supported by the embedded engine")
            qkv = _fused([attn.q_proj, attn.k_proj, attn.v_proj])
            gate_up = _fused([mlp.gate_proj, mlp.up_proj])
            # The fused copies replace them: drop the originals now, not with the model (peak memory).
            attn.q_proj = attn.k_proj = attn.v_proj = mlp.gate_proj = mlp.up_proj = None
            self.layers.append(
                {
                    "norm1": layer.input_layernorm,
                    "norm2": layer.post_attention_layernorm,
                    "qkv": qkv,
                    "o": attn.o_proj,
                    "gate_up": gate_up,
                    "down": mlp.down_proj,
                }
            )
        self.intermediate = config.intermediate_size
        self.adapters: dict[str, LoraWeights] = {}
        self._arange = torch.arange(config.max_position_embeddings)
        # The native decode-attention kernel (kernels.py), when the engine could build one.
        self.decode_attention: DecodeAttention | None = None

    @property
    def cache_dtype(self) -> torch.dtype:
        """The KV cache's dtype: the model's, except that an int8 engine with the native kernel keeps
        bfloat16 keys and values. Its decode steps are bound by reading the cache as much as the weights
        (16 rows x 150 columns: ~110 MB a step in float32), the kernel reads bfloat16 as cheaply, and
        int8 activations are far coarser than bfloat16's rounding."""
        import torch

        return torch.bfloat16 if self.quantized and self.decode_attention is not None else self.dtype

    def to_dtype(self, dtype: torch.dtype) -> None:
        """Cast every weight in place, one tensor at a time (no second copy of the model in memory).
        Casting float32 weights gives exactly what loading the model in `dtype` gives."""
        for layer in self.layers:
            for module in layer.values():
                module.to(dtype)
        self.norm.to(dtype)
        self.embed = self.embed.to(dtype)
        if self.head is not None:
            self.head = self.head.to(dtype)
        self.dtype = dtype

    def quantize(self) -> None:
        """int8 weights with dynamic activation scales (fbgemm) for every Linear of the decoder layers.

        The head stays floating point, in bfloat16 where the CPU has native bf16 instructions: an int8
        head measured 1.6x faster steps at 16 rows but lost a fifth of the tutor benchmark's score (0.179
        against 0.224 in float), while int8 layers with a float head kept it within the interval (0.214).
        An int8 copy of it only shortlists greedy rows' candidates for the float head (greedy_tokens).
        LoRA deltas are computed beside the quantized base in floating point, so adapters work unchanged."""
        import torch
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

        def int8(linear: torch.nn.Linear) -> Any:
            linear.qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
            return DynamicLinear.from_float(linear)

        for layer in self.layers:
            for name in ("qkv", "o", "gate_up", "down"):
                layer[name] = int8(layer[name])
        # The float32 checkpoint is memory-mapped, and a tensor still viewing it keeps the whole mapping
        # resident (~500 MB more RSS): the float weights left — the norms, the embedding and an untied
        # head — get memory of their own, before the head's copies below add to the peak.
        for module in (self.norm, *(layer[name] for layer in self.layers for name in ("norm1", "norm2"))):
            for parameter in module.parameters():
                parameter.data = parameter.data.clone()
        self.embed = self.embed.clone()
        if self.head is not None:
            self.head = self.head.clone()
        float_head = self.embed if self.tied else self.head
        screen = torch.nn.Linear(float_head.shape[1], float_head.shape[0], bias=False)
        screen.weight = torch.nn.Parameter(float_head, requires_grad=False)
        self.screen = int8(screen)
        if cpu_supports_bf16():
            head = float_head.to(torch.bfloat16)
            if self.tied and _bfloat16_values(self.embed, head):
                # A checkpoint whose embedding holds bf16 values: one bf16 table serves the lookups,
                # exactly, and the head — 113 MB less than a float32 table beside it.
                self.embed = head
            self.head = head
        self.quantized = True

    # ---- adapters --------------------------------------------------------------------------------------

    def add_adapter(self, key: str, path: Path) -> None:
        """Read a peft LoRA folder (safetensors) into per-module A/B matrices in the model's dtype."""
        from safetensors.torch import load_file

        config = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
        unsupported = [
            option
            for option in ("use_dora", "modules_to_save", "lora_bias", "layers_to_transform", "alora_invocation_tokens")
            if config.get(option)
        ]
        if config.get("peft_type", "LORA") != "LORA" or unsupported:
            raise FailedPrecondition(
                f"the embedded engine serves plain LoRA adapters; this one uses {', '.join(unsupported) or config.get('peft_type')}"
            )
        rank = int(config["r"])
        alpha = float(config.get("lora_alpha", rank))
        rank_pattern = config.get("rank_pattern") or {}
        alpha_pattern = config.get("alpha_pattern") or {}
        tensors = load_file(str(Path(path) / "adapter_model.safetensors"))
        weights = LoraWeights()
        for name, a in tensors.items():
            if ".lora_A." not in name:
                continue
            module_path = name.removeprefix("base_model.model.").split(".lora_A.")[0]
            parts = module_path.split(".")
            if "layers" not in parts or parts[-1] not in TARGETS:
                raise FailedPrecondition(f"the embedded engine cannot apply LoRA to {module_path}")
            layer = int(parts[parts.index("layers") + 1])
            b = tensors[name.replace(".lora_A.", ".lora_B.")]
            r = _pattern(rank_pattern, module_path, rank)
            scale = _pattern(alpha_pattern, module_path, alpha) / (math.sqrt(r) if config.get("use_rslora") else r)
            # float32 like peft's autocast_adapter_dtype, so bf16 serving adds the same deltas peft would.
            weights.modules[(layer, parts[-1])] = (a.float().contiguous(), b.float().contiguous(), scale)
        self.adapters[key] = weights

    def remove_adapter(self, key: str) -> None:
        self.adapters.pop(key, None)

    def groups(self, adapters: list[str]) -> list[_Group]:
        """Row groups per adapter for one forward pass (base rows need none)."""
        rows: dict[str, list[int]] = {}
        for index, key in enumerate(adapters):
            if key:
                rows.setdefault(key, []).append(index)
        return [_Group(self.adapters[key], members, len(adapters)) for key, members in rows.items()]

    # ---- forward ---------------------------------------------------------------------------------------

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        cache: SlotCache,
        slots: torch.Tensor,
        lengths: torch.Tensor,
        groups: list[_Group],
        attend: int,
        mask: torch.Tensor | None,
        causal: bool,
        last: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run `tokens` [rows, q] at `positions` [rows, q]; their keys/values go to `cache` at `slots`,
        columns `lengths`..`lengths + q`. Attention reads the first `attend` columns of each slot, under
        `mask` [rows, 1, q, attend] (None = every column, or causal when `causal`). Returns the hidden
        state of each row's last position, or of its position `last[row]` (rows padded at the end; the
        caller applies the head)."""
        import torch
        import torch.nn.functional as F

        rows, q = tokens.shape
        x = F.embedding(tokens, self.embed).to(self.dtype)
        cos, sin = self.rotary(x, positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        columns = lengths[:, None] + self._arange[:q]
        slot_index = slots[:, None].expand(rows, q)
        contiguous_slots = bool(rows == 1 or (slots[1:] - slots[:-1] == 1).all()) if rows > 1 else True
        first = int(slots[0])
        # F.linear on the weights is what nn.Linear runs, without the module call's overhead (120 calls a
        # step); int8 layers are modules of their own.
        project = _call if self.quantized else _linear
        rotated_heads = self.heads + self.kv_heads
        for index, layer in enumerate(self.layers):
            h = layer["norm1"](x)
            qkv = project(layer["qkv"], h)
            if groups:
                self._lora(qkv, h, groups, index, ATTENTION, self.splits)
            qkv = qkv.view(rows, q, -1, self.head_dim).transpose(1, 2)
            # Query and key heads rotated in one go: the same elementwise ops per element as rotating
            # them apart (identical values), with half the ops.
            rotated = qkv[:, :rotated_heads]
            rotated = rotated * cos + _rotate_half(rotated) * sin
            query, key = rotated[:, : self.heads], rotated[:, self.heads :]
            value = qkv[:, rotated_heads:]
            keys, values = cache.keys[index], cache.values[index]
            # [slot, head, column, dim] <- [rows, q, head, dim] at (slot, column) pairs
            keys[slot_index, :, columns] = key.transpose(1, 2).to(keys.dtype)
            values[slot_index, :, columns] = value.transpose(1, 2).to(values.dtype)
            if contiguous_slots:
                keys, values = keys[first : first + rows, :, :attend], values[first : first + rows, :, :attend]
            else:
                keys, values = keys[slots, :, :attend], values[slots, :, :attend]
            attn = self._attend(query, keys, values, mask, causal, lengths).transpose(1, 2).reshape(rows, q, -1)
            out = project(layer["o"], attn)
            if groups:
                self._lora(out, attn, groups, index, ("o_proj",), (out.shape[-1],))
            x = x + out
            h = layer["norm2"](x)
            gate_up = project(layer["gate_up"], h)
            if groups:
                self._lora(gate_up, h, groups, index, MLP_IN, (self.intermediate, self.intermediate))
            gate, up = gate_up.split(self.intermediate, dim=-1)
            inner = F.silu(gate) * up
            out = project(layer["down"], inner)
            if groups:
                self._lora(out, inner, groups, index, ("down_proj",), (out.shape[-1],))
            x = x + out
        if last is None or q == 1:
            return self.norm(x[:, -1])
        return self.norm(x[torch.arange(rows), last])

    def _attend(self, query: Any, keys: Any, values: Any, mask: Any, causal: bool, lengths: Any) -> Any:
        """SDPA with transformers' GQA choices, so a request alone runs the kernels (and gets the numerics)
        of `generate`: no mask -> enable_gqa; one query token under a mask -> the query heads of each KV
        head packed as that head's queries; else the KV heads repeated. A batch of one-token rows always
        takes the packed form (enable_gqa measured 1.6x slower for the whole step at 16 rows), through the
        native kernel when there is one: torch's SDPA spent half of a 16-row step at 150 columns there.
        A bfloat16 cache under float32 queries (the int8 engine's) sends every one-token row to the kernel.
        With one query token, row r attends its columns 0..lengths[r] (what `mask` says)."""
        import torch.nn.functional as F

        rows, heads, q, dim = query.shape
        group = heads // self.kv_heads
        kernel = self.decode_attention
        if q == 1 and kernel is not None and kernel.supports(query.dtype) and (rows > 1 or keys.dtype != query.dtype):
            packed = query.reshape(rows, self.kv_heads, group, dim)
            return kernel(packed, keys, values, lengths, self.scale).reshape(rows, heads, 1, dim)
        if keys.dtype != query.dtype:
            # SDPA takes one dtype (a prefill's; decode rows went to the kernel).
            keys, values = keys.to(query.dtype), values.to(query.dtype)
        if mask is None and (q > 1 or rows == 1):
            return F.scaled_dot_product_attention(query, keys, values, is_causal=causal, scale=self.scale, enable_gqa=True)
        if q == 1:
            packed = query.reshape(rows, self.kv_heads, group, dim)
            out = F.scaled_dot_product_attention(packed, keys, values, attn_mask=mask, scale=self.scale)
            return out.reshape(rows, heads, 1, dim)
        keys = keys.repeat_interleave(group, dim=1)
        values = values.repeat_interleave(group, dim=1)
        return F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=self.scale)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        head = self.embed if self.head is None else self.head
        # An int8 engine's bfloat16 head takes bfloat16 activations; logits are float32 either way after.
        return F.linear(hidden.to(head.dtype), head)

    def greedy_tokens(self, hidden: torch.Tensor) -> list[int]:
        """Each row's most likely next token, for an int8 engine: the int8 screen scores the vocabulary,
        and the top SCREENED_CANDIDATES are scored again in float32 against the head's float rows (a tied
        head's are the embedding table's: the checkpoint's own values).

        Reading the bf16 head (56 MB for SmolLM2) was a fifth of a 16-row step; the screen reads half of
        that. And the pick is the float model's: on 800 tutor-reply positions it was the argmax of the
        float32 head's logits every time, where the bf16 head picked another token at 6 of them."""
        import torch

        candidates = self.screen(hidden.float()).topk(SCREENED_CANDIDATES, dim=-1).indices
        head = self.embed if self.tied else self.head
        scores = torch.bmm(head[candidates].float(), hidden.float()[:, :, None]).squeeze(-1)
        return candidates.gather(1, scores.argmax(dim=-1, keepdim=True)).squeeze(1).tolist()

    def _lora(self, out: Any, x: Any, groups: list[_Group], layer: int, names: tuple[str, ...], sizes: tuple[int, ...]) -> None:
        """Add each group's LoRA delta (B · A · x · scale) to its rows of `out`, module by module.

        A step runs this ~4 times per layer per adapter on a handful of rows, so the op count matters: a
        group's rows are gathered once for all its modules (and only when one of them is adapted here),
        and a scale of 1 is not multiplied (x * 1.0 is x)."""
        x = x.float()
        for group in groups:
            rows = None
            start = 0
            for name, size in zip(names, sizes, strict=True):
                weights = group.lora.modules.get((layer, name))
                if weights is not None:
                    a, b, scale = weights
                    if rows is None:
                        rows = x if group.all else x[group.slice] if group.slice is not None else x[group.index]
                    delta = (rows @ a.T) @ b.T
                    if scale != 1.0:
                        delta = delta * scale
                    # Cast before adding, as peft's mixed-batch forward does (bf16 serving matches peft).
                    delta = delta.to(out.dtype)
                    if group.all:
                        out[..., start : start + size] += delta
                    elif group.slice is not None:
                        out[group.slice, :, start : start + size] += delta
                    else:
                        out[:, :, start : start + size].index_add_(0, group.index, delta)
                start += size


def release_memory() -> None:
    """Return freed heap pages to the OS (glibc keeps large freed blocks otherwise, so the RSS of a
    process that loaded and dropped a model copy stays high). A no-op where there is no glibc."""
    import ctypes
    import ctypes.util

    gc.collect()
    name = ctypes.util.find_library("c")
    if name:
        trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
        if trim is not None:
            trim(0)


def _fused(linears: list[Any]) -> Any:
    import torch

    first = linears[0]
    fused = torch.nn.Linear(
        first.in_features, sum(lin.out_features for lin in linears), bias=first.bias is not None, dtype=first.weight.dtype
    )
    with torch.no_grad():
        fused.weight.copy_(torch.cat([lin.weight for lin in linears]))
        if first.bias is not None:
            fused.bias.copy_(torch.cat([lin.bias for lin in linears]))
    return fused.requires_grad_(False)


def _bfloat16_values(table: Any, rounded: Any) -> bool:
    """Whether `table` (float32) equals its bfloat16 rounding `rounded`, compared a block of rows at a
    time (one float copy of a vocabulary-sized table would add ~113 MB to the start-up peak)."""
    import torch

    block = 4096
    return all(torch.equal(rounded[i : i + block].float(), table[i : i + block]) for i in range(0, table.shape[0], block))


def _linear(module: Any, x: Any) -> Any:
    import torch.nn.functional as F

    return F.linear(x, module.weight, module.bias)


def _call(module: Any, x: Any) -> Any:
    return module(x)


def _rotate_half(x: Any) -> Any:
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _pattern(patterns: dict[str, Any], module_path: str, default: float) -> Any:
    """peft's rank_pattern / alpha_pattern: the value of the longest key the module path ends with."""
    matches = [key for key in patterns if module_path == key or module_path.endswith("." + key)]
    return patterns[max(matches, key=len)] if matches else default
