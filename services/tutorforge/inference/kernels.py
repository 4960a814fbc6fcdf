"""Native kernels of the embedded engine, compiled on the machine that runs them.

The C source ships in the package (`decode_attention.c`). The first engine start on a machine compiles it
with the system C compiler (`-O3 -march=native -ffast-math`) into the model cache, under a name derived from the
source, the flags and this CPU's instruction sets (a cache shared by nodes of other CPUs never hands one
a library it cannot run); later starts load it with ctypes. Without a compiler, or if compiling fails,
the engine keeps torch's SDPA and its start-up line says so."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tutorforge.core.models import cpu_flags

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("decode_attention.c")
# Compiled with -ffast-math (vectorized expf and reductions) but linked without it: GCC (before 13) links
# crtfastmath into a library linked with it, and loading that switches the whole process to flush
# subnormal floats to zero.
COMPILE_FLAGS = ("-O3", "-march=native", "-ffast-math", "-fPIC")
LINK_FLAGS = ("-shared",)
_COMPILE_TIMEOUT_S = 120


class DecodeAttention:
    """Attention of one new token per row over that row's cached columns (decode_attention.c): float32
    queries and arithmetic, over a float32 or a bfloat16 cache.

    For float32 engines only (`supports`): in bfloat16, torch's SDPA rounds its softmax weights to bf16,
    and a kernel that does not would break near-ties differently for a row decoded in a batch than for
    the same row alone."""

    def __init__(self, library: ctypes.CDLL):
        import torch

        # Checked per layer of every decode step: a plain comparison, no import there.
        self._dtype = torch.float32
        pointer, long, int_ = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
        self._functions = {}
        # One entry point per cache element type (decode_attention.c).
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            function = getattr(library, f"decode_attention_{name}")
            function.argtypes = [pointer, pointer, pointer, long, long, long, pointer, int_, int_, int_, int_, ctypes.c_float, pointer, pointer]
            function.restype = None
            self._functions[dtype] = function

    def supports(self, dtype: torch.dtype) -> bool:
        """Whether an engine computing in `dtype` may use the kernel."""
        return dtype == self._dtype

    def __call__(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor, scale: float) -> torch.Tensor:
        """query [rows, kv_heads, group, dim]; keys and values [rows, kv_heads, columns, dim] (views of the
        cache: float32 or bfloat16, any strides with unit stride along dim, the same for both); row r
        attends its columns 0..lengths[r]. Returns [rows, kv_heads, group, dim] in float32."""
        import torch

        rows, kv_heads, group, dim = query.shape
        function = self._functions.get(keys.dtype)
        if function is None or values.dtype != keys.dtype or keys.stride() != values.stride() or keys.stride(-1) != 1:
            raise ValueError("keys and values must be float32 or bfloat16 views of one layout with unit stride along dim")
        query = query.to(torch.float32).contiguous()
        lengths = lengths.to(torch.int64).contiguous()
        out = torch.empty((rows, kv_heads, group, dim), dtype=torch.float32)
        scores = torch.empty(group * (int(lengths.max()) + 1), dtype=torch.float32)
        slot, head, column, _ = keys.stride()
        # ctypes releases the GIL for the call: serving threads keep streaming meanwhile.
        function(
            query.data_ptr(), keys.data_ptr(), values.data_ptr(), slot, head, column, lengths.data_ptr(),
            rows, kv_heads, group, dim, scale, out.data_ptr(), scores.data_ptr(),
        )
        return out


def load_decode_attention(folder: Path) -> DecodeAttention | None:
    """The compiled decode-attention kernel (compiled into `folder` on first use), or None when this
    machine cannot build it (the reason is logged)."""
    library = folder / f"decode_attention-{_build_key()}.so"
    if not library.is_file():
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            log.warning("no C compiler found (set CC) for the decode-attention kernel, SDPA stays")
            return None
        partial = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # Built beside its final name and renamed: a concurrent start never loads a half-written file.
            handle, partial = tempfile.mkstemp(dir=folder, suffix=".so.partial")
            os.close(handle)
            obj = partial.removesuffix(".so.partial") + ".o.partial"
            for command in (
                [compiler, *COMPILE_FLAGS, "-c", str(SOURCE), "-o", obj],
                [compiler, *LINK_FLAGS, obj, "-o", partial, "-lm"],
            ):
                subprocess.run(command, check=True, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S)
            os.replace(partial, library)
        except (OSError, subprocess.SubprocessError) as error:
            # A read-only model cache, a compiler that fails: the engine serves on, with SDPA.
            detail = getattr(error, "stderr", "") or str(error)
            log.warning("building the decode-attention kernel failed, SDPA stays: %s", detail.strip()[-500:])
            return None
        finally:
            if partial is not None:
                Path(partial).unlink(missing_ok=True)
                Path(partial.removesuffix(".so.partial") + ".o.partial").unlink(missing_ok=True)
    try:
        return DecodeAttention(ctypes.CDLL(str(library)))
    except (OSError, AttributeError) as error:
        log.warning("the decode-attention kernel %s cannot be loaded, SDPA stays: %s", library, error)
        return None


def _build_key() -> str:
    """Source, flags and the CPU's instruction sets: what decides whether a built library runs here."""
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(" ".join((*COMPILE_FLAGS, *LINK_FLAGS)).encode())
    digest.update(platform.machine().encode())
    digest.update(" ".join(sorted(cpu_flags())).encode())
    return digest.hexdigest()[:16]

