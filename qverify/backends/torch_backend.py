"""PyTorch (CPU) adapter.

Op level, one :class:`~qverify.backends.base.Variant` per torch API that computes differently:

============================  =====================  ============================================
variant                       profile                ops (OpCase op -> torch call)
============================  =====================  ============================================
``fake_quantize``             torch.fake_quantize    fake_quant -> fake_quantize_per_tensor_affine
                                                     / fake_quantize_per_channel_affine
``fake_quantize_learnable``   torch.fake_quantize    fake_quant -> _fake_quantize_learnable_per_
                                                     tensor_affine / _per_channel_affine (forward)
``quantize``                  torch.quantize         QuantizeLinear -> quantize_per_tensor /
                                                     quantize_per_channel; DequantizeLinear ->
                                                     Tensor.dequantize
``pt2e``                      torch.pt2e             QuantizeLinear / DequantizeLinear ->
                                                     quantized_decomposed.{quantize,dequantize}_
                                                     per_{tensor,channel}
``int8.x86``                  torch.x86              QLinearMatMul -> quantized.linear,
``int8.fbgemm`` /             torch.quantize         QLinearConv -> quantized.conv2d, with
``int8.qnnpack``                                     torch.backends.quantized.engine set
``int8.inductor``             torch.inductor         QLinearConv -> onednn.qconv_prepack +
                                                     qconv_pointwise.tensor; QLinearMatMul ->
                                                     onednn.qlinear_prepack + qlinear_pointwise.
                                                     tensor (what Inductor lowers a PT2E graph to)
============================  =====================  ============================================

``int8.inductor`` stands for torchao's PT2E path (``X86InductorQuantizer``, ``convert_pt2e``,
``torch.compile`` with ``torch._inductor.config.freezing = True``): rather than compile per example
(seconds each), it calls the oneDNN ops that Inductor's quantization lowering emits, with the
argument forms of the generated code (:func:`run_inductor_kernel`);
``tests/backends/test_torch_inductor.py`` proves a compiled graph runs exactly these calls. uint8
activations, int8 symmetric weights (a per-tensor weight scale runs as equal channel scales); an
asymmetric weight is refused. Offered when the capability ``engine:inductor`` is present (this
torch registers ``torch.ops.onednn.qconv_pointwise`` and its siblings).

The eager int8 kernels run in a separate worker process: some engine/geometry combinations crash
the interpreter (``x86``/``onednn`` quantized conv2d segfaults on torch 2.13 for a width-1 input
with stride 2, padding 1, dilation 2), and a crash must become a recorded finding, not the end of
the test session. Every op runs on one torch thread.

Model level: ``open_model`` loads ``torch_int8`` (eager int8 kernels of the engine named in
``options["engine"]``, default ``"x86"``) or ``torch_fq`` (the fake-quant simulation) through the
quantizer's loaders (:mod:`qverify.quantizer.torch_int8`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from qverify.errors import BackendUnavailable, InputError, ModelError

from .base import (
    FORMAT_TORCH_DYNAMIC,
    FORMAT_TORCH_FQ,
    FORMAT_TORCH_INT8,
    Availability,
    Backend,
    ModelSession,
    OpCase,
    Variant,
)

PIP_FIX = "pip install 'torch==2.13.0'"
ENGINES = ("x86", "fbgemm", "qnnpack")
# the reference profile that describes each eager engine's int8 kernels (see the module docstring)
ENGINE_PROFILES = {"x86": "torch.x86", "fbgemm": "torch.quantize", "qnnpack": "torch.quantize"}
INDUCTOR_PROFILE = "torch.inductor"  # the reference profile of variant int8.inductor

_QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
_KERNEL_OPS = frozenset({"QLinearMatMul", "QLinearConv"})
# torch's eager int8 kernels take quint8 activations and outputs and qint8 weights.
_KERNEL_DTYPES = (("uint8", "int8", "uint8"),)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch 2.13 warns on every quantized-tensor creation (the eager API is deprecated upstream
    but still deployed and tested here); silence exactly that notice."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*quantized tensor creation functions.*", category=UserWarning
        )
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated.*")
        yield


@contextlib.contextmanager
def _one_thread(torch) -> Iterator[None]:
    n = torch.get_num_threads()
    if n != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n != 1:
            torch.set_num_threads(n)


def _axis(case: OpCase, rank: int) -> int:
    axis = int(case.attrs.get("axis", 1))
    if not -rank <= axis < rank:
        raise InputError(
            f"{case.op}: axis={axis} is out of range for a rank-{rank} input",
            f"pass axis in [{-rank}, {rank - 1}]",
        )
    return axis % rank


def _qdtype(torch, np_dtype: np.dtype):
    if np_dtype == np.int8:
        return torch.qint8
    if np_dtype == np.uint8:
        return torch.quint8
    raise InputError(
        f"torch quantized tensors hold int8 or uint8 codes, not {np_dtype}", "pass int8 or uint8 codes"
    )


def _plain_dtype(torch, np_dtype: np.dtype):
    if np_dtype == np.int8:
        return torch.int8
    if np_dtype == np.uint8:
        return torch.uint8
    raise InputError(
        f"quantized_decomposed ops take int8 or uint8 codes, not {np_dtype}", "pass int8 or uint8 codes"
    )


def _code_range(np_dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(np_dtype)
    return int(info.min), int(info.max)


def _decomposed(torch):
    """``torch.ops.quantized_decomposed`` (registered when its defining module is imported)."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401 - registers the ops

    return torch.ops.quantized_decomposed


# ---------------------------------------------------------------------------------------------
# quantize / dequantize / fake-quant (in process)


def _run_quantize(torch, case: OpCase) -> np.ndarray:
    x, s, z = (np.asarray(a) for a in case.inputs[:3])
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    qd = _qdtype(torch, z.dtype)
    if s.ndim == 0:
        q = torch.quantize_per_tensor(xt, float(s), int(z), qd)
    else:
        ax = _axis(case, x.ndim)
        q = torch.quantize_per_channel(
            xt,
            torch.from_numpy(s.astype(np.float64)),
            torch.from_numpy(np.broadcast_to(z, s.shape).astype(np.int64)),
            ax,
            qd,
        )
    return q.int_repr().numpy()


def _run_dequantize(torch, case: OpCase) -> np.ndarray:
    q, s, z = (np.asarray(a) for a in case.inputs[:3])
    _qdtype(torch, q.dtype)
    codes = torch.from_numpy(np.ascontiguousarray(q))
    if s.ndim == 0:
        qt = torch._make_per_tensor_quantized_tensor(codes, float(s), int(z))
    else:
        ax = _axis(case, q.ndim)
        qt = torch._make_per_channel_quantized_tensor(
            codes,
            torch.from_numpy(s.astype(np.float64)),
            torch.from_numpy(np.broadcast_to(z, s.shape).astype(np.int64)),
            ax,
        )
    return qt.dequantize().numpy()


def _run_pt2e(torch, case: OpCase) -> np.ndarray:
    d = _decomposed(torch)
    a0, s, z = (np.asarray(a) for a in case.inputs[:3])
    if case.op == "QuantizeLinear":
        codes_dtype, t = z.dtype, torch.from_numpy(np.ascontiguousarray(a0, np.float32))
        per_tensor, per_channel = d.quantize_per_tensor, d.quantize_per_channel
    else:
        codes_dtype, t = a0.dtype, torch.from_numpy(np.ascontiguousarray(a0))
        per_tensor, per_channel = d.dequantize_per_tensor, d.dequantize_per_channel
    lo, hi = _code_range(codes_dtype)
    dt = _plain_dtype(torch, codes_dtype)
    if s.ndim == 0:
        return per_tensor(t, float(s), int(z), lo, hi, dt).numpy()
    scales = torch.from_numpy(s.astype(np.float32))
    zps = torch.from_numpy(np.broadcast_to(z, s.shape).astype(np.int64))
    return per_channel(t, scales, zps, _axis(case, a0.ndim), lo, hi, dt).numpy()


def _run_fake_quant(torch, case: OpCase, learnable: bool) -> np.ndarray:
    x, s, z = (np.asarray(a) for a in case.inputs[:3])
    qmin, qmax = int(case.attrs["quant_min"]), int(case.attrs["quant_max"])
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    per_channel = s.ndim > 0
    ax = _axis(case, x.ndim) if per_channel else None
    zb = np.broadcast_to(z, s.shape) if per_channel else z
    with torch.no_grad():
        if learnable:
            st = torch.from_numpy(np.atleast_1d(s).astype(np.float32))
            zt = torch.from_numpy(np.atleast_1d(zb).astype(np.float32))
            if per_channel:
                y = torch._fake_quantize_learnable_per_channel_affine(xt, st, zt, ax, qmin, qmax, 1.0)
            else:
                y = torch._fake_quantize_learnable_per_tensor_affine(xt, st, zt, qmin, qmax, 1.0)
        elif per_channel:
            y = torch.fake_quantize_per_channel_affine(
                xt,
                torch.from_numpy(s.astype(np.float32)),
                torch.from_numpy(zb.astype(np.int32)),
                ax,
                qmin,
                qmax,
            )
        else:
            y = torch.fake_quantize_per_tensor_affine(xt, float(s), int(z), qmin, qmax)
    return y.numpy()


# ---------------------------------------------------------------------------------------------
# eager int8 kernels (in the worker process)


def _per_tensor_or_channel(torch, codes: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int):
    t = torch.from_numpy(np.ascontiguousarray(codes))
    scale = np.asarray(scale)
    if scale.ndim == 0:
        return torch._make_per_tensor_quantized_tensor(t, float(scale), int(np.asarray(zp)))
    zps = np.broadcast_to(np.asarray(zp), scale.shape).astype(np.int64)
    return torch._make_per_channel_quantized_tensor(
        t, torch.from_numpy(scale.astype(np.float64)), torch.from_numpy(zps), axis
    )


def _float_bias(bias: np.ndarray | None, x_scale, w_scale) -> np.ndarray | None:
    """torch's int8 modules take a float bias; an int32 bias of scale ``sx*sw`` is handed over as
    ``f32(b * f32(sx*sw))`` (what a QDQ exporter's bias DequantizeLinear computes)."""
    if bias is None:
        return None
    from qverify.reference.quantize import dequantize_bias

    bs = (np.float32(x_scale) * np.asarray(w_scale, np.float32)).astype(np.float32)
    return dequantize_bias(np.asarray(bias, np.int32), bs)


def _onednn_available(torch) -> bool:
    """True when this torch registers the oneDNN int8 ops that Inductor's quantization lowering
    emits (``torch.ops.onednn.qconv_pointwise`` and ``qlinear_pointwise``)."""
    try:
        ops = torch.ops.onednn
        return (
            bool(torch.backends.mkldnn.is_available())
            and hasattr(ops, "qconv_pointwise")
            and hasattr(ops, "qconv_prepack")
            and hasattr(ops, "qlinear_pointwise")
            and hasattr(ops, "qlinear_prepack")
        )
    except (AttributeError, RuntimeError):
        return False


def _per_channel_params(torch, scale, zp, n: int, what: str):
    """Weight scale and zero point as the PT2E graph holds them after ``convert_pt2e`` with
    ``X86InductorQuantizer``: per output channel, float32 scales, int64 zero points. A per-tensor
    scale/zero point is repeated over the ``n`` channels (a per-channel dequantize with equal
    channels computes what the per-tensor one does)."""
    s = np.asarray(scale, np.float32)
    z = np.asarray(zp)
    if s.size not in (1, n) or z.size not in (1, n):
        raise InputError(
            f"{what}: weight scale/zero point of sizes {s.size}/{z.size} do not fit {n} output channels",
            "pass one value or one per output channel",
        )
    ws = torch.from_numpy(np.broadcast_to(s.reshape(-1), (n,)).astype(np.float32))
    wz = torch.from_numpy(np.broadcast_to(z.reshape(-1), (n,)).astype(np.int64))
    return ws, wz


def _check_inductor_dtypes(op: str, x: np.ndarray, w: np.ndarray, yz: np.ndarray) -> None:
    if x.dtype != np.uint8 or w.dtype != np.int8 or np.asarray(yz).dtype != np.uint8:
        raise InputError(
            f"{op} on the PT2E/Inductor int8 path takes uint8 activations and outputs and int8 weights, "
            f"not {x.dtype}/{w.dtype}/{np.asarray(yz).dtype}",
            "pass uint8 x and y zero points and int8 weights (X86InductorQuantizer's default config)",
        )


def _check_symmetric_weights(op: str, wz: np.ndarray) -> None:
    """X86InductorQuantizer quantizes weights symmetric, and the oneDNN ops mishandle a weight zero
    point (measured, torch 2.13: qconv_pointwise gives the codes of zero point 0, qlinear_pointwise
    codes up to 252 LSB off): refuse one rather than return wrong codes."""
    if np.any(np.asarray(wz) != 0):
        raise InputError(
            f"{op} on the PT2E/Inductor int8 path takes symmetric weights only (weight zero point 0); "
            f"the oneDNN int8 ops do not apply zero point {np.asarray(wz).ravel()[:4].tolist()}",
            "quantize the weights symmetric, as X86InductorQuantizer does",
        )


def run_inductor_kernel(op: str, inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any]) -> np.ndarray:
    """Run QLinearConv / QLinearMatMul as torch Inductor runs a PT2E graph (``X86InductorQuantizer``,
    ``convert_pt2e``, ``torch.compile`` with ``torch._inductor.config.freezing = True``): the calls
    Inductor's quantization lowering emits for ``dequantize_per_tensor(x) -> conv2d / linear
    (dequantize_per_channel(w), float bias) -> quantize_per_tensor``, with the same argument forms:

    * conv: ``onednn.qconv_prepack(w, w_scale, x_scale, x_zp, stride, padding, dilation, groups,
      x_shape)``, then ``onednn.qconv_pointwise.tensor(x (channels-last uint8), x_scale (0-d float32
      tensor), x_zp (0-d int32 tensor), packed, w_scale (float32 per channel), w_zp (int64 per
      channel), bias (float32 or None), stride, padding, dilation, groups, y_scale (Python float),
      y_zp (int), torch.uint8, "none", [None], "")``;
    * matmul ``a @ b``: the linear weight ``b.T``; ``onednn.qlinear_prepack(b.T, a_shape)``, then
      ``onednn.qlinear_pointwise.tensor(a, ...same scalar forms..., None, y_scale, y_zp, torch.uint8,
      "none", [None], "")`` (an input of rank 3 is passed as is, as the lowering does for a
      contiguous input).

    The int32 bias codes (scale ``sx*sw``) are handed over as the float bias ``f32(b * f32(sx*sw))``
    (PT2E keeps the bias in float). ``tests/backends/test_torch_inductor.py`` proves that a compiled
    graph of these cases emits exactly these ops and gives the same codes. Runs in this process:
    callers that must survive a crash use :class:`_KernelWorker` (engine ``"inductor"``).
    """
    import torch

    if not _onednn_available(torch):
        raise BackendUnavailable(
            "torch",
            "this torch has no oneDNN int8 ops (torch.ops.onednn.qconv_pointwise / qlinear_pointwise)",
            "install a torch build with oneDNN (mkldnn), e.g. " + PIP_FIX,
        )
    ops = torch.ops.onednn
    with _one_thread(torch), torch.no_grad():
        if op == "QLinearConv":
            x, x_s, xz, w, w_s, wz, ys, yz = (np.asarray(a) for a in inputs[:8])
            bias = inputs[8] if len(inputs) > 8 else None
            _check_inductor_dtypes(op, x, w, yz)
            _check_symmetric_weights(op, wz)
            pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
            if pads[:2] != pads[2:]:
                raise InputError(
                    f"torch conv2d pads symmetrically; pads={pads} are not", "use equal begin/end pads"
                )
            stride = [int(v) for v in attrs.get("strides", [1, 1])]
            dilation = [int(v) for v in attrs.get("dilations", [1, 1])]
            groups = int(attrs.get("group", 1))
            ws, wzt = _per_channel_params(torch, w_s, wz, w.shape[0], op)
            fb = _float_bias(bias, x_s, w_s)
            xt = torch.from_numpy(np.ascontiguousarray(x)).contiguous(memory_format=torch.channels_last)
            packed = ops.qconv_prepack(
                torch.from_numpy(np.ascontiguousarray(w)), ws, float(x_s), int(xz),
                stride, pads[:2], dilation, groups, list(x.shape),
            )
            out = ops.qconv_pointwise.tensor(
                xt,
                torch.tensor(float(x_s), dtype=torch.float32),
                torch.tensor(int(xz), dtype=torch.int32),
                packed, ws, wzt,
                None if fb is None else torch.from_numpy(fb),
                stride, pads[:2], dilation, groups,
                float(ys), int(yz), torch.uint8, "none", [None], "",
            )
            return out.contiguous().numpy()
        if op == "QLinearMatMul":
            a, a_s, az, b, b_s, bz, ys, yz = (np.asarray(v) for v in inputs[:8])
            _check_inductor_dtypes(op, a, b, yz)
            if b.ndim != 2 or a.ndim not in (2, 3):
                raise InputError(
                    f"QLinearMatMul on the PT2E/Inductor path is a linear layer: a of rank 2 or 3 and a "
                    f"2-D weight b, not shapes {a.shape} and {b.shape}",
                    "pass a constant 2-D b",
                )
            _check_symmetric_weights(op, bz)
            ws, wzt = _per_channel_params(torch, b_s, bz, b.shape[1], op)
            packed = ops.qlinear_prepack(torch.from_numpy(np.ascontiguousarray(b.T)), list(a.shape))
            out = ops.qlinear_pointwise.tensor(
                torch.from_numpy(np.ascontiguousarray(a)),
                torch.tensor(float(a_s), dtype=torch.float32),
                torch.tensor(int(az), dtype=torch.int32),
                packed, ws, wzt, None,
                float(ys), int(yz), torch.uint8, "none", [None], "",
            )
            return out.contiguous().numpy()
    raise InputError(f"the PT2E/Inductor int8 path does not run op {op!r}", "use QLinearMatMul or QLinearConv")


def run_int8_kernel(
    engine: str, op: str, inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any]
) -> np.ndarray:
    """Run QLinearMatMul / QLinearConv on torch's eager int8 kernels of ``engine`` (in this
    process: callers that must survive a crash use :class:`_KernelWorker`)."""
    import torch

    if engine == "inductor":
        return run_inductor_kernel(op, inputs, attrs)
    if engine not in torch.backends.quantized.supported_engines:
        raise BackendUnavailable(
            "torch",
            f"quantized engine {engine!r} is not built into this torch",
            f"choose from {torch.backends.quantized.supported_engines}",
        )
    torch.backends.quantized.engine = engine
    with _quiet(), _one_thread(torch), torch.no_grad():
        if op == "QLinearMatMul":
            a, a_s, az, b, b_s, bz, ys, yz = inputs[:8]
            qa = _per_tensor_or_channel(torch, a, a_s, az, 0)
            w = _per_tensor_or_channel(torch, np.ascontiguousarray(np.asarray(b).T), b_s, bz, 0)
            packed = torch.ops.quantized.linear_prepack(w, None)
            out = torch.ops.quantized.linear(qa, packed, float(ys), int(yz))
            return out.int_repr().numpy()
        if op == "QLinearConv":
            x, x_s, xz, w, w_s, wz, ys, yz = inputs[:8]
            bias = inputs[8] if len(inputs) > 8 else None
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            if pads[:2] != pads[2:]:
                raise InputError(
                    f"torch conv2d pads symmetrically; pads={pads} are not", "use equal begin/end pads"
                )
            qx = _per_tensor_or_channel(torch, x, x_s, xz, 0)
            qw = _per_tensor_or_channel(torch, w, w_s, wz, 0)
            fb = _float_bias(bias, x_s, w_s)
            packed = torch.ops.quantized.conv2d_prepack(
                qw,
                None if fb is None else torch.from_numpy(fb),
                list(attrs.get("strides", [1, 1])),
                pads[:2],
                list(attrs.get("dilations", [1, 1])),
                int(attrs.get("group", 1)),
            )
            out = torch.ops.quantized.conv2d(qx, packed, float(ys), int(yz))
            return out.int_repr().numpy()
    raise InputError(f"torch int8 engines do not run op {op!r}", "use QLinearMatMul or QLinearConv")


def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)))
    stream.write(data)
    stream.flush()


def _recv(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError("the other side closed the pipe")
    (n,) = struct.unpack("<Q", head)
    data = stream.read(n)
    if len(data) < n:
        raise EOFError("truncated message")
    return pickle.loads(data)  # noqa: S301 - our own child process, over its private pipe


def worker_main() -> None:  # pragma: no cover - runs in the child process
    """The int8 worker's loop: requests on stdin, replies on the original stdout (anything the
    runtime prints goes to stderr)."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    import torch

    torch.set_num_threads(1)
    while True:
        try:
            msg = _recv(inp)
        except EOFError:
            return
        if msg is None:
            return
        engine, op, inputs, attrs = msg
        try:
            _send(out, ("ok", run_int8_kernel(engine, op, inputs, attrs)))
        except Exception as err:  # noqa: BLE001 - every failure goes back to the caller
            _send(out, ("err", type(err).__name__, str(err).splitlines()[0] if str(err) else ""))


class KernelCrashed(RuntimeError):
    """The int8 kernel killed its process (a runtime crash, e.g. SIGSEGV)."""


class _KernelWorker:
    """One long-lived child interpreter (``python -c``, so no user ``__main__`` is re-imported)
    that runs the int8 kernels; restarted after a crash."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._atexit = False

    def _start(self) -> None:
        if not self._atexit:
            atexit.register(self.close)  # stop the child before the interpreter tears down
            self._atexit = True
        code = "from qverify.backends.torch_backend import worker_main; worker_main()"
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argv: this interpreter and our module
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

    def run(
        self, engine: str, op: str, inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any]
    ) -> np.ndarray:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            proc = self._proc
            try:
                _send(
                    proc.stdin,
                    (engine, op, [None if a is None else np.asarray(a) for a in inputs], dict(attrs)),
                )
                reply = _recv(proc.stdout)
            except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
                code = proc.wait(10)
                self._proc = None
                for stream in (proc.stdin, proc.stdout):
                    with contextlib.suppress(Exception):
                        stream.close()
                raise KernelCrashed(
                    f"torch int8 engine {engine!r} crashed running {op} (worker exit code {code}"
                    f"{', SIGSEGV' if code == -signal.SIGSEGV else ''})"
                ) from None
        if reply[0] == "ok":
            return reply[1]
        _, name, message = reply
        if name == "InputError":
            raise InputError(message)
        if name == "BackendUnavailable":
            raise BackendUnavailable("torch", message)
        raise RuntimeError(f"{name}: {message}")

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(Exception):
                _send(proc.stdin, None)
                proc.stdin.close()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                with contextlib.suppress(Exception):
                    stream.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: S110 - interpreter shutdown: modules may already be gone
            pass


# ---------------------------------------------------------------------------------------------


class TorchBackend(Backend):
    name = "torch"
    # torch_dynamic: eager dynamic-int8 Linear modules (qverify.quantizer.dynamic), after the static ones
    model_formats = (FORMAT_TORCH_INT8, FORMAT_TORCH_FQ, FORMAT_TORCH_DYNAMIC)
    model_profile = "torch.quantize"

    def __init__(self) -> None:
        self._worker = _KernelWorker()

    @cached_property
    def _availability(self) -> Availability:
        try:
            import torch
        except ImportError as err:
            return Availability(False, reason=f"torch is not installed ({err}); fix: {PIP_FIX}")
        engines = tuple(e for e in ENGINES if e in torch.backends.quantized.supported_engines)
        # engine:inductor - the oneDNN int8 ops that Inductor lowers a PT2E graph to
        if _onednn_available(torch):
            engines += ("inductor",)
        caps = ("op", "model", *(f"engine:{e}" for e in engines))
        return Availability(True, torch.__version__.split("+")[0], capabilities=caps)

    def availability(self) -> Availability:
        return self._availability

    def _torch(self):
        av = self.availability()
        if not av.available:
            raise BackendUnavailable(self.name, av.reason, PIP_FIX)
        import torch

        return torch

    def variants(self) -> Sequence[Variant]:
        """The torch APIs that compute differently (see the module docstring); the int8 engines
        each form one variant: ``x86`` described by ``torch.x86`` (its conv adds the output zero
        point before rounding for symmetric weights), ``fbgemm`` and ``qnnpack`` by
        ``torch.quantize``."""
        return (
            Variant("fake_quantize", "torch.fake_quantize", {"api": "fake_quantize"}),
            Variant("fake_quantize_learnable", "torch.fake_quantize", {"api": "fake_quantize_learnable"}),
            Variant("quantize", "torch.quantize", {"api": "quantize"}),
            Variant("pt2e", "torch.pt2e", {"api": "pt2e"}),
            *(Variant(f"int8.{e}", ENGINE_PROFILES[e], {"api": "int8", "engine": e}) for e in ENGINES),
            Variant("int8.inductor", INDUCTOR_PROFILE, {"api": "int8", "engine": "inductor"}),
        )

    def supports(self, op: str, variant: Variant) -> bool:
        api = variant.options.get("api")
        if api in ("fake_quantize", "fake_quantize_learnable"):
            return op == "fake_quant"
        if api in ("quantize", "pt2e"):
            return op in _QUANT_OPS
        if api == "int8" and variant.options.get("engine") == "inductor":
            # offered wherever torch is; without engine:inductor run_op raises BackendUnavailable,
            # so the row is reported as skipped with the reason
            return op in _KERNEL_OPS
        if api == "int8":
            return (
                op in _KERNEL_OPS
                and f"engine:{variant.options['engine']}" in self.availability().capabilities
            )
        return False

    def case_constraints(self, op: str, variant: Variant) -> dict[str, Any]:
        """The eager int8 kernels take quint8 activations/outputs and qint8 weights only; so does
        the PT2E/Inductor path (``int8.inductor``: X86InductorQuantizer's uint8 activations, int8
        per-channel symmetric weights; a per-tensor weight scale runs as equal channel scales; an
        asymmetric weight is refused with an InputError, so none is drawn)."""
        if op in _KERNEL_OPS and variant.options.get("engine") == "inductor":
            return {
                "act_dtypes": ("uint8",),
                "weight_dtypes": ("int8",),
                "qlinear_dtypes": _KERNEL_DTYPES,
                "weight_symmetric": True,
                "note": "PT2E/Inductor int8 (X86InductorQuantizer): uint8 activations, int8 symmetric "
                "weights (the quantizer makes no other; the adapter refuses asymmetric ones: "
                "test_torch_inductor.py)",
            }
        if op in _KERNEL_OPS:
            return {
                "act_dtypes": ("uint8",),
                "weight_dtypes": ("int8",),
                "qlinear_dtypes": _KERNEL_DTYPES,
                "note": "torch eager int8 kernels take quint8 activations and qint8 weights only",
            }
        return {}

    def run_op(self, case: OpCase, variant: Variant) -> np.ndarray:
        torch = self._torch()
        if not self.supports(case.op, variant):
            raise InputError(
                f"torch variant {variant.name!r} does not run op {case.op!r}",
                "pick a variant whose supports() accepts the op",
            )
        api = variant.options["api"]
        if api == "int8":
            engine = variant.options["engine"]
            if f"engine:{engine}" not in self.availability().capabilities:
                raise BackendUnavailable(
                    self.name,
                    f"torch {self.availability().version} has no int8 engine {engine!r}"
                    + (" (no torch.ops.onednn.qconv_pointwise / qlinear_pointwise: built without oneDNN)"
                       if engine == "inductor" else ""),
                    "install a torch build with oneDNN (mkldnn), e.g. " + PIP_FIX,
                )
            return self._worker.run(engine, case.op, case.inputs, case.attrs)
        with _quiet(), _one_thread(torch):
            if api == "quantize":
                return (
                    _run_quantize(torch, case)
                    if case.op == "QuantizeLinear"
                    else _run_dequantize(torch, case)
                )
            if api == "pt2e":
                return _run_pt2e(torch, case)
            return _run_fake_quant(torch, case, learnable=api == "fake_quantize_learnable")

    def close(self) -> None:
        """Stop the int8 worker process (it is restarted on the next int8 op)."""
        self._worker.close()

    # -- model level -----------------------------------------------------------------------------

    def open_model(
        self,
        files: Mapping[str, Path],
        *,
        threads: int = 1,
        options: Mapping[str, Any] | None = None,
    ) -> ModelSession:
        """Load ``torch_int8`` (else ``torch_fq``, else ``torch_dynamic``): the exporter's directory holding
        ``artifact.json`` + ``weights.npz``. ``threads`` (default 1) torch intra-op threads;
        ``options["engine"]`` (default ``"x86"``) the quantized engine for ``torch_int8``."""
        self._torch()
        fmt = self.pick_format(files)
        if fmt is None:
            raise ModelError(
                f"torch can load none of the given formats {sorted(files)}",
                f"export one of: {', '.join(self.model_formats)}",
            )
        opts = dict(options or {})
        engine = str(opts.get("engine", "x86"))
        eager = [c.split(":", 1)[1] for c in self.availability().capabilities
                 if c.startswith("engine:") and c.split(":", 1)[1] in ENGINES]  # not "inductor": op level only
        if fmt in (FORMAT_TORCH_INT8, FORMAT_TORCH_DYNAMIC) and engine not in eager:
            raise InputError(
                f"torch quantized engine {engine!r} is not available here",
                f"choose from: {', '.join(eager)}",
            )
        return TorchModelSession(Path(files[fmt]), fmt, int(threads), engine)


class TorchModelSession(ModelSession):
    """A model loaded through the quantizer's loaders; float in, float out."""

    def __init__(self, path: Path, fmt: str, threads: int, engine: str):
        import torch

        from qverify.quantizer.artifact import QuantArtifact
        from qverify.quantizer.torch_int8 import load_torch_fq, load_torch_int8

        if threads < 1:
            raise InputError(f"threads={threads} must be >= 1", "pass threads=1 or more")
        if not path.exists():
            raise ModelError(f"model path {path} does not exist", "export the model first")
        try:
            art = QuantArtifact.load(path)
            with _quiet():
                if fmt == FORMAT_TORCH_DYNAMIC:
                    from qverify.quantizer.dynamic import load_torch_dynamic

                    self._module = load_torch_dynamic(path)
                else:
                    self._module = load_torch_int8(path) if fmt == FORMAT_TORCH_INT8 else load_torch_fq(path)
        except (InputError, ModelError):
            raise
        except Exception as err:
            raise ModelError(
                f"torch cannot load {path}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                "re-export the model with qverify's quantizer",
            ) from None
        self._module.eval()
        self._torch = torch
        self._threads = threads
        self._engine = engine
        self.input_names = [art.input_name]
        self.output_names = [art.output]
        int8_mods = sorted(
            {
                type(m).__name__
                for m in self._module.modules()
                if type(m).__module__.startswith("torch.ao.nn.quantized")
            }
        )
        self.execution_info = {
            "format": fmt,
            "engine": engine if fmt in (FORMAT_TORCH_INT8, FORMAT_TORCH_DYNAMIC) else None,
            "precision": "int8"
            if fmt == FORMAT_TORCH_INT8 and int8_mods
            else "int8 dynamic (Linear)"
            if fmt == FORMAT_TORCH_DYNAMIC and int8_mods
            else "float32 (fake-quant simulation)",
            "int8_modules": int8_mods,
            "threads": threads,
            "torch": torch.__version__,
        }

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        name = self.input_names[0]
        if name not in feeds:
            raise InputError(f"feeds lack the model input {name!r}", f"pass {{{name!r}: array}}")
        x = torch.from_numpy(np.ascontiguousarray(feeds[name], np.float32))
        prev_engine = torch.backends.quantized.engine
        prev_threads = torch.get_num_threads()
        try:
            if self.execution_info["engine"]:
                torch.backends.quantized.engine = self._engine
            torch.set_num_threads(self._threads)
            with _quiet(), torch.no_grad():
                y = self._module(x)
        finally:
            torch.set_num_threads(prev_threads)
            torch.backends.quantized.engine = prev_engine
        return [y.detach().numpy()]
