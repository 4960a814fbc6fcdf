"""The native decode-attention kernel: built with the machine's C compiler, cached per source and CPU,
equal to torch's SDPA on the engine's cache layout (rows of different lengths, strided views of a larger
cache, grouped-query heads; float32 and bfloat16 caches), and absent — with SDPA serving — where nothing can build it."""

from __future__ import annotations

import logging
import shutil

import pytest
from tooling import missing_tool
from tutorforge.inference import kernels

ROWS, KV_HEADS, GROUP, DIM, CAPACITY = 5, 3, 3, 64, 96


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        missing_tool("no C compiler (cc/gcc) to build the decode-attention kernel")
    built = kernels.load_decode_attention(tmp_path_factory.mktemp("kernels"))
    assert built is not None, "a C compiler is present, yet the kernel did not build (see the warning logged)"
    return built


def _reference(query, keys, values, lengths, scale):
    import torch
    import torch.nn.functional as F

    attend = int(lengths.max()) + 1
    mask = (torch.arange(attend)[None, :] <= lengths[:, None])[:, None, None, :]
    return F.scaled_dot_product_attention(
        query.float(), keys[:, :, :attend].float(), values[:, :, :attend].float(), attn_mask=mask, scale=scale
    )


@pytest.mark.parametrize("cache_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("dim", [DIM, 32, 40])  # 32: the 32-wide value blocks; 40: the plain loops (no block fits)
def test_kernel_equals_sdpa_on_strided_rows_of_different_lengths(kernel, dim, cache_dtype):
    import torch

    generator = torch.Generator().manual_seed(dim)
    dtype = getattr(torch, cache_dtype)
    # A cache with spare slots and columns, read through a view of slots 1..ROWS, as the engine does.
    cache_keys = torch.randn(ROWS + 2, KV_HEADS, CAPACITY, dim, generator=generator).to(dtype)
    cache_values = torch.randn(ROWS + 2, KV_HEADS, CAPACITY, dim, generator=generator).to(dtype)
    keys, values = cache_keys[1 : ROWS + 1], cache_values[1 : ROWS + 1]
    query = torch.randn(ROWS, KV_HEADS, GROUP, dim, generator=generator)
    # Lengths around the 8-column blocks' edges, and a row attending one column.
    lengths = torch.tensor([0, 7, 8, 33, CAPACITY - 1])
    # The engines that may use it compute in float32, whatever their cache holds.
    assert kernel.supports(torch.float32) and not kernel.supports(torch.bfloat16)
    got = kernel(query, keys, values, lengths, dim**-0.5)
    # A bfloat16 cache is read as the float32 values it holds (widening is exact).
    expected = _reference(query, keys, values, lengths, dim**-0.5)
    assert got.dtype == torch.float32 and got.shape == (ROWS, KV_HEADS, GROUP, dim)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # Columns past a row's length do not matter: scribbling on them changes nothing.
    cache_keys[1, :, 1:] = 1e4
    cache_values[1, :, 1:] = -1e4
    torch.testing.assert_close(kernel(query, keys, values, lengths, dim**-0.5)[0], got[0])


def test_the_library_is_built_once_per_source_and_cpu(kernel, tmp_path):
    assert kernels.load_decode_attention(tmp_path) is not None
    (library,) = tmp_path.glob("decode_attention-*.so")
    built = library.stat().st_mtime_ns
    assert kernels.load_decode_attention(tmp_path) is not None
    assert library.stat().st_mtime_ns == built
    assert not list(tmp_path.glob("*.partial"))


def test_loading_the_kernel_leaves_the_process_floating_point_mode_alone(kernel, tmp_path):
    assert kernels.load_decode_attention(tmp_path) is not None
    # A library built with -ffast-math would have switched the process to flush subnormals to zero.
    smallest = 5e-324
    assert smallest * 1.0 > 0 and smallest / 2 == 0 and 2.2250738585072014e-308 / 4 > 0


def test_without_a_compiler_there_is_no_kernel_and_the_reason_is_logged(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="tutorforge.inference.kernels")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert kernels.load_decode_attention(tmp_path / "kernels") is None
    assert "SDPA stays" in caplog.text
    assert not list((tmp_path / "kernels").glob("*"))
