"""Attention speed options: dense attention through diffusers' dispatch (`attention.kernel`), RoPE in fp32,
opt-in torch.compile of the transformer blocks; bad kernels exit 2 before weights load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dualpar.attention.base import AttnCall
from dualpar.attention.dense import DenseAttention, available_kernels, kernel_problem
from dualpar.attention.factory import attention_factory
from dualpar.cli import run
from dualpar.models.loader import build_stage
from dualpar.models.registry import builtin_info
from dualpar.models.rope import apply_rope
from dualpar.models.wan import PassContext
from dualpar.testing.jobs import compose

CPU = torch.device("cpu")
CALL = AttnCall(0, 0, 0, 1, ("cond",), (1, 2, 2), (1, 2, 2), 0)


def _qkv(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 3, n, 16, generator=g).to(dtype) for n in (20, 28, 28)]


def test_native_kernel_is_sdpa_exactly_and_math_agrees() -> None:
    q, k, v = _qkv()
    expected = F.scaled_dot_product_attention(q, k, v)
    native = attention_factory({"backend": "dense"})(0)
    assert native.kernel == "native"
    assert torch.equal(native(q, k, v, CALL), expected)
    torch.testing.assert_close(DenseAttention("_native_math")(q, k, v, CALL), expected, atol=1e-6, rtol=1e-5)
    assert native.stats().pairs_computed == 2 * 3 * 20 * 28


def test_kernel_availability_on_cpu() -> None:
    assert "native" in available_kernels("cpu") and "flash" not in available_kernels("cpu")
    assert kernel_problem("native", "cpu", torch.float32) is None
    assert "unknown" in kernel_problem("fast", "cpu", None)
    assert "not available on cpu" in kernel_problem("flash", "cpu", torch.bfloat16)
    assert "bfloat16 or float16" in kernel_problem("_native_flash", "cpu", torch.float32)


@pytest.mark.parametrize("kernel", ["flash", "no_such_kernel"])
def test_unavailable_kernel_exits_2_naming_the_key(tmp_path, capsys, kernel) -> None:
    code = run(compose([f"output.dir={tmp_path / 'out'}", f"attention.kernel={kernel}", "model.device=cpu"]))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("dualpar: error: attention.kernel:"), err
    assert "native" in err.split("Fix:")[1]  # lists what is available here
    assert not (tmp_path / "out").exists()


def test_bad_text_encoder_device_exits_2(tmp_path, capsys) -> None:
    assert run(compose([f"output.dir={tmp_path / 'out'}", "model.text_encoder_device=gpu"])) == 2
    assert capsys.readouterr().err.startswith("dualpar: error: model.text_encoder_device:")


def _reference_rope(x, cos, sin):
    """diffusers' WanAttnProcessor apply_rotary_emb, verbatim arithmetic."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


def test_rope_runs_in_fp32_and_equals_diffusers_bit_for_bit() -> None:
    stage = build_stage(builtin_info("tiny", 0), range(0, 1), True, True, torch.float32, CPU)
    cos, sin = stage.rope_tables(3, 4, 4)
    assert cos.dtype == sin.dtype == torch.float32
    stage.rope.double()  # float64 buffers (as diffusers builds them on some devices): tables still fp32
    assert stage.rope_tables(3, 4, 4)[0].dtype == torch.float32
    x = torch.randn(2, cos.shape[1], 2, cos.shape[-1], generator=torch.Generator().manual_seed(1))
    for dtype in (torch.float32, torch.bfloat16):
        xd = x.to(dtype)
        out = apply_rope(xd, cos[0, :, 0], sin[0, :, 0])
        assert out.dtype == dtype and torch.equal(out, _reference_rope(xd, cos, sin))  # CPU: identical
        # float64 tables are rounded to fp32 first: no fp64 arithmetic, same numbers
        assert torch.equal(apply_rope(xd, cos[0, :, 0].double(), sin[0, :, 0].double()), out)


def test_compile_wraps_every_block_and_keeps_the_output() -> None:
    info = builtin_info("tiny", 0)
    outs = []
    for compiled in (False, True):
        stage = build_stage(info, range(0, 2), True, True, torch.float32, CPU)
        stage.install_attention(attention_factory({"backend": "dense"}))
        if compiled:
            stage.compile_blocks(backend="aot_eager")  # the same wrapping as the default inductor, no C++ build
            assert all(b._compiled_call_impl is not None for b in stage.layer_blocks())
        f, h, w = 2, 4, 4
        rope = stage.rope_tables(f, h, w)
        ctx = PassContext(rope, rope, use_cache=False, capture=None, call=CALL)
        g = torch.Generator().manual_seed(2)
        hidden = torch.randn(2, f * (h // 2) * (w // 2), 24, generator=g)
        temb, proj, text = stage.conditions(torch.tensor([500.0, 500.0]), torch.randn(2, 8, 32, generator=g))
        with torch.no_grad():
            outs.append(stage.run_layers(hidden, text, proj, ctx))
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)
