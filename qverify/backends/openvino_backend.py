"""OpenVINO (CPU plugin) adapter.

Op level, one variant ``cpu`` (profile ``openvino``), every model compiled on ``CPU`` with
``INFERENCE_PRECISION_HINT=f32`` and ``INFERENCE_NUM_THREADS=1``:

* ``fake_quantize_range``: ``FakeQuantize`` built with ``openvino.opset13`` and constant ranges;
* ``fake_quant``: the same ``FakeQuantize`` with the ranges ONNX Q/DQ translate to
  (``il = ol = f32(s*(qmin - zp))``, ``ih = oh = f32(s*(qmax - zp))``, ``levels = qmax - qmin + 1``),
  per tensor or per axis;
* ``QuantizeLinear`` / ``DequantizeLinear`` and the QDQ subgraphs ``qdq_conv`` (with its post ops),
  ``qdq_matmul``, ``qdq_gemm``: ONNX models from :mod:`qverify.backends.onnx_graphs` read with
  ``Core.read_model`` and compiled on CPU.

Parameters are always constants (the deployed form): with ranges or scales as graph inputs the
CPU plugin takes another code path that computes differently
(``tests/backends/test_openvino.py::test_parameter_form_differs_from_constant_form``). Shapes are
static too (deployed models are; a model with dynamic dimensions runs other kernels with other
arithmetic, ``test_dynamic_shapes_compute_differently``). So one model is compiled per parameter
set and shape, cached per op, shape, dtype and parameters. Compiling costs tens of milliseconds even
for a one-node model, which bounds op-level throughput: one compile per example runs at tens of
examples/s (``test_drawn_parameters_property_test_speed`` in ``tests/backends/test_bench_openvino.py``).

Batching: :meth:`OpenVinoBackend.run_ops` compiles up to ``BATCH_SIZE`` (64) cases of one op into
one model, each an independent branch with its own constants and static shapes (a few ms per case
instead of one compile each); ``tests/backends/test_openvino_batch.py`` proves every op of
``BATCHED_OPS`` bit-identical to one model per case. Ops are never mixed in one model: a
DequantizeLinear beside QuantizeLinear branches compiles to other arithmetic.

What really executed is read from the compiled model's runtime model (rt_info ``layerType``,
``runtimePrecision``, ``originalLayersNames``): :meth:`OpenVinoBackend.execution_info` says whether
the Convolution / MatMul of a QDQ subgraph ran on i8/u8 or fell back to float.

The CPU plugin's default ``INFERENCE_PRECISION_HINT`` is bf16 on CPUs with AVX-512 BF16 (this one:
AMD EPYC with avx512_bf16), which rounds float parts of a model to bfloat16; qverify sets f32
unless ``options={"precision": ...}`` says otherwise.

Model level: ``open_model`` loads ``openvino_ir`` (the ``.xml``; the ``.bin`` beside it) or else
``onnx_qdq``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from qverify.errors import BackendUnavailable, InputError, ModelError

from . import onnx_graphs
from .base import (
    FORMAT_ONNX_DYNAMIC,
    FORMAT_ONNX_QDQ,
    FORMAT_OPENVINO_IR,
    Availability,
    Backend,
    ModelSession,
    OpCase,
    Variant,
)

PIP_FIX = "pip install openvino"
DEVICE = "CPU"

_ONNX_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "qdq_conv", "qdq_matmul", "qdq_gemm"})
_FQ_OPS = frozenset({"fake_quant", "fake_quantize_range"})
_QDQ_OPS = frozenset({"qdq_conv", "qdq_matmul", "qdq_gemm"})
# Layer types of the runtime model that carry the arithmetic of a QDQ subgraph.
_COMPUTE_LAYERS = frozenset({"Convolution", "FullyConnected", "MatMul", "Deconvolution"})
_LOW_PRECISIONS = frozenset({"i8", "u8"})


BATCH_SIZE = 64  # cases per compiled model in OpenVinoBackend.run_ops
# Ops run_ops compiles several to a model: those tests/backends/test_openvino_batch.py proves
# bit-identical to one model per case.
BATCHED_OPS = frozenset({"fake_quant", "fake_quantize_range", "QuantizeLinear", "DequantizeLinear",
                         "qdq_conv", "qdq_matmul", "qdq_gemm"})


def _batch_kind(case: OpCase) -> str | None:
    if case.op not in BATCHED_OPS:
        return None
    return "fq" if case.op in _FQ_OPS else "onnx"


def _precision(variant: Variant) -> str:
    return str(variant.options.get("precision", "f32"))


def _version(full: str) -> str:
    """``2026.4.1-22982-e213a147257-releases/2026/4`` -> ``2026.4.1`` (a PEP 440 version)."""
    return full.split("-", 1)[0]


def compile_config(threads: int = 1, precision: str = "f32") -> dict[str, Any]:
    """CPU plugin properties used for every compile: ``threads`` inference threads (default 1), one
    stream, latency hint, ``INFERENCE_PRECISION_HINT=precision`` (default ``"f32"``)."""
    return {
        "INFERENCE_PRECISION_HINT": precision,
        "INFERENCE_NUM_THREADS": int(threads),
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
    }


def _rt_string(rt, key: str) -> str:
    try:
        return str(rt[key].astype(str)) if key in rt else ""
    except Exception:  # noqa: BLE001 - an rt_info entry that is not a string
        return ""


def runtime_layers(compiled) -> list[dict[str, str]]:
    """Each node of ``compiled.get_runtime_model()``: name, layerType, runtimePrecision,
    originalLayersNames (strings; empty when the runtime does not say)."""
    rows = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        row = {"name": op.get_friendly_name()}
        for key in ("layerType", "runtimePrecision", "originalLayersNames"):
            row[key] = _rt_string(rt, key)
        rows.append(row)
    return rows


def summarize_execution(layers: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """What the runtime model says about precision: the compute layers (Convolution,
    FullyConnected, MatMul) with their runtime precision, whether all of them ran on i8/u8
    (``precision`` ``"int8"``), some fell back to float (``"mixed"``) or all did (``"float"``)."""
    compute = [
        {
            "layer": lay["name"],
            "type": lay["layerType"],
            "precision": lay["runtimePrecision"],
            "original": lay["originalLayersNames"],
        }
        for lay in layers
        if lay["layerType"] in _COMPUTE_LAYERS
    ]
    low = [c for c in compute if c["precision"] in _LOW_PRECISIONS]
    fell_back = [c for c in compute if c["precision"] not in _LOW_PRECISIONS]
    if not compute:
        precision = "none"
    elif not fell_back:
        precision = "int8"
    elif low:
        precision = "mixed"
    else:
        precision = "float"
    counts: dict[str, int] = {}
    for lay in layers:
        key = f"{lay['layerType']}:{lay['runtimePrecision']}"
        counts[key] = counts.get(key, 0) + 1
    return {
        "precision": precision,
        "compute_layers": compute,
        "fell_back_to_float": [c["layer"] for c in fell_back],
        "layers": counts,
    }


class OpenVinoBackend(Backend):
    name = "openvino"
    # onnx_dynamic (DynamicQuantizeLinear + MatMulInteger): read by the ONNX frontend; measured with
    # openvino 2026.4 on mlp-digits, the CPU plugin runs it as FullyConnected in f32 on the integer
    # codes (execution_info says so), which is exact while |sum| < 2**24.
    model_formats = (FORMAT_OPENVINO_IR, FORMAT_ONNX_QDQ, FORMAT_ONNX_DYNAMIC)
    model_profile = "openvino"

    def __init__(self) -> None:
        self._compiled = onnx_graphs.ModelCache(maxsize=256)
        self._info: dict[Any, dict[str, Any]] = {}
        # execution summaries of cases that ran as a branch of a batch model, by model cache key
        # (so execution_info need not compile the case alone); bounded like the model cache
        self._batch_info: dict[Any, dict[str, Any]] = {}
        self._lock = threading.Lock()
        # run_ops: cases run as branches of a batch, cases run one by one (cached, not batched, or
        # left alone after a failed batch), batch models that failed; the last failure, one line
        self.batch_counts = {"batched": 0, "single": 0, "failed_batches": 0}
        self.last_batch_error = ""

    @cached_property
    def _availability(self) -> Availability:
        try:
            import openvino as ov
        except ImportError as err:
            return Availability(False, reason=f"openvino is not installed ({err}); fix: {PIP_FIX}")
        version = _version(ov.__version__)
        try:
            core = ov.Core()
            devices = core.available_devices
        except Exception as err:  # noqa: BLE001 - a broken install says why
            return Availability(False, version, reason=f"openvino cannot start: {err}")
        if DEVICE not in devices:
            return Availability(
                False, version, reason=f"openvino has no CPU device here (devices: {devices})"
            )
        try:
            hint = core.get_property(DEVICE, "INFERENCE_PRECISION_HINT")
            default = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        except Exception:  # noqa: BLE001
            default = "unknown"
        return Availability(True, version, capabilities=("op", "model", f"cpu_default_precision:{default}"))

    def availability(self) -> Availability:
        return self._availability

    @cached_property
    def _core(self):
        av = self.availability()
        if not av.available:
            raise BackendUnavailable(self.name, av.reason, PIP_FIX)
        import openvino as ov

        return ov.Core()

    def cpu_default_precision(self) -> str:
        """The CPU plugin's own default INFERENCE_PRECISION_HINT here (bf16 on AVX-512 BF16 CPUs)."""
        for cap in self.availability().capabilities:
            if cap.startswith("cpu_default_precision:"):
                return cap.split(":", 1)[1]
        return "unknown"

    def variants(self) -> Sequence[Variant]:
        """``cpu``: the CPU plugin in float32 inference precision, constant parameters."""
        return (Variant("cpu", "openvino", {"precision": "f32"}),)

    def supports(self, op: str, variant: Variant) -> bool:
        return op in _ONNX_OPS or op in _FQ_OPS

    def case_constraints(self, op: str, variant: Variant) -> dict[str, Any]:
        """Narrowed draws, each for a reason tested in tests/backends/test_openvino.py:

        * per-axis parameters are not drawn for QuantizeLinear: the ONNX frontend refuses a
          per-axis QuantizeLinear on any axis but the last ("Argument shapes are inconsistent",
          ``test_onnx_per_axis_qdq_loads_on_the_last_axis_only``); DequantizeLinear and the
          FakeQuantize form (``fake_quant``) are drawn per axis;
        * QDQ subgraphs are drawn in the dtypes the ONNX frontend fuses into u8/i8 kernels (uint8
          weights do not compile: ``test_qdq_conv_with_uint8_weights_does_not_compile``);
        * FakeQuantize scales are drawn >= 1e-6: below that the CPU plugin shifts the output by up to
          (128 - zp) steps (``test_small_scales_shift_fake_quantize_by_128_minus_zero_point``).
        """
        if op == "fake_quant":
            return {
                "min_scale": 1e-6,
                "note": "scales >= 1e-6: below that the CPU plugin shifts a FakeQuantize's output by "
                "up to (128 - zp) steps (a runtime fault, tested separately: "
                "test_small_scales_shift_fake_quantize_by_128_minus_zero_point)",
            }
        if op == "QuantizeLinear":
            return {
                "per_axis": False,
                "note": "no per-axis parameters: the ONNX frontend loads a per-axis "
                "QuantizeLinear on the last axis only (tested separately)",
            }
        if op in _QDQ_OPS:
            return {
                "qlinear_dtypes": (
                    ("uint8", "int8", "uint8"),
                    ("int8", "int8", "int8"),
                    ("uint8", "int8", "int8"),
                )
            }
        return {}

    # -- op level --------------------------------------------------------------------------------

    def _compile(self, model, precision: str = "f32", threads: int = 1):
        return self._core.compile_model(model, DEVICE, compile_config(threads, precision))

    @staticmethod
    def _cache_key(case: OpCase, precision: str):
        if case.op in _FQ_OPS:
            return ("fq", _fq_signature(case), precision)
        if case.op in _ONNX_OPS:
            shapes = tuple(np.shape(a) for a in case.inputs)
            return ("onnx", onnx_graphs.signature(case, "constant"), shapes, precision)
        raise InputError(f"openvino does not run op {case.op!r}", "see OpenVinoBackend.supports")

    def compiled_for(self, case: OpCase, variant: Variant):
        """(feed function, compiled model, runtime summary) for ``case`` under ``variant``, cached
        per op signature (op, attrs, ranks, dtypes, parameter values)."""
        precision = _precision(variant)
        key = self._cache_key(case, precision)
        if case.op in _FQ_OPS:
            factory = lambda: self._build_fq(case, precision)  # noqa: E731
        else:
            factory = lambda: self._build_onnx(case, precision)  # noqa: E731
        return self._compiled.get(key, factory)

    def _build_onnx(self, case: OpCase, precision: str):
        built = onnx_graphs.cached_build(case, "constant")
        model = self._core.read_model(built.serialized())
        # deployed models have static shapes, and the CPU plugin compiles dynamic ones differently
        model.reshape(
            {
                name: list(np.shape(case.inputs[pos]))
                for name, pos in zip(built.input_names, built.feed_positions)
            }
        )
        compiled = self._compile(model, precision)
        summary = summarize_execution(runtime_layers(compiled))
        names = built.input_names

        def feeds(c: OpCase) -> dict[str, np.ndarray]:
            return built.feeds(c)

        return feeds, compiled, summary, names

    def _build_fq(self, case: OpCase, precision: str):
        import openvino as ov
        import openvino.opset13 as ops

        x = np.asarray(case.inputs[0])
        if x.dtype != np.float32:
            raise InputError(f"{case.op}: x must be float32, got {x.dtype}", "pass x as float32")
        il, ih, ol, oh, levels = _fq_ranges(case)
        param = ops.parameter(list(x.shape), ov.Type.f32, name="x")  # static, as deployed
        fq = ops.fake_quantize(
            param, ops.constant(il), ops.constant(ih), ops.constant(ol), ops.constant(oh), levels
        )
        model = ov.Model([fq.output(0)], [param], f"qverify_{case.op}")
        compiled = self._compile(model, precision)
        summary = summarize_execution(runtime_layers(compiled))

        def feeds(c: OpCase) -> dict[str, np.ndarray]:
            return {"x": np.ascontiguousarray(c.inputs[0], np.float32)}

        return feeds, compiled, summary, ("x",)

    def run_op(self, case: OpCase, variant: Variant) -> np.ndarray:
        feeds, compiled, _, _ = self.compiled_for(case, variant)
        result = compiled(feeds(case))
        return np.array(result[compiled.outputs[0]], copy=True)

    def run_ops(self, cases: Sequence[OpCase], variant: Variant) -> list[np.ndarray | Exception]:
        """Run many cases in few compiled models; element ``i`` is what :meth:`run_op` gives for
        ``cases[i]`` (same values, dtype and shape) or the exception running it raised.

        Cases of the ops in :data:`BATCHED_OPS` whose model is not cached already are compiled
        ``BATCH_SIZE`` (64) at a time, one op (and post-op chain) per model: a DequantizeLinear
        branch in a model that also holds QuantizeLinear branches computes differently (1 ulp,
        ``test_a_model_with_quantize_branches_changes_dequantize_linear``). Each case is an
        independent branch of the model (FakeQuantize branches built with ``openvino.opset13``,
        ONNX ops merged with :func:`onnx_graphs.merge`, static shapes); a batch that fails to
        build, compile or run is split in halves and retried, down to single cases. Cases not batched (other ops, cached
        models, a case left alone) go through :meth:`run_op`. ``BackendUnavailable`` propagates.
        ``batch_counts`` counts what went which way.
        """
        if cases:
            self._core  # noqa: B018 - raises BackendUnavailable (naming the fix) when openvino is missing
        precision = _precision(variant)
        out: list[np.ndarray | Exception | None] = [None] * len(cases)
        groups: dict[tuple[str, str, tuple[str, ...]], list[int]] = {}
        for i, case in enumerate(cases):
            kind = _batch_kind(case)
            if kind is not None:
                try:
                    cached = self._cache_key(case, precision) in self._compiled
                except BackendUnavailable:
                    raise
                except Exception:  # noqa: BLE001 - run_op below raises it again, in its slot
                    cached = True
                if not cached:
                    # one op (and QDQ post-op chain) per model: what else a model holds can change
                    # how the plugin compiles a branch (tests/backends/test_openvino_batch.py)
                    groups.setdefault((kind, case.op, tuple(case.attrs.get("post", ()))), []).append(i)
                    continue
            out[i] = self._run_one(case, variant)
        for (kind, _, _), idx in groups.items():
            for start in range(0, len(idx), BATCH_SIZE):
                chunk = idx[start : start + BATCH_SIZE]
                for i, value in zip(chunk, self._run_chunk(kind, [cases[i] for i in chunk], variant, precision)):
                    out[i] = value
        return out  # type: ignore[return-value] - every slot is filled

    def _run_one(self, case: OpCase, variant: Variant) -> np.ndarray | Exception:
        self.batch_counts["single"] += 1
        try:
            return self.run_op(case, variant)
        except BackendUnavailable:
            raise
        except Exception as err:  # noqa: BLE001 - the case's own failure, returned in its slot
            return err

    def _run_chunk(
        self, kind: str, cases: Sequence[OpCase], variant: Variant, precision: str
    ) -> list[np.ndarray | Exception]:
        """Batched results for ``cases``; a case whose branch cannot be prepared, or that is left
        alone by :meth:`_try_batch`, goes through :meth:`run_op` instead."""
        prepared: list[int] = []
        branches: list[Any] = []
        for j, case in enumerate(cases):
            try:
                branches.append(_fq_branch(case) if kind == "fq" else onnx_graphs.cached_build(case, "constant"))
                prepared.append(j)
            except Exception:  # noqa: BLE001 - run_op raises it again, in its slot
                pass
        out: list[np.ndarray | None] = [None] * len(cases)
        values = self._try_batch(kind, [cases[j] for j in prepared], branches, precision)
        for j, value in zip(prepared, values):
            out[j] = value
        return [self._run_one(case, variant) if value is None else value for case, value in zip(cases, out)]

    def _try_batch(
        self, kind: str, cases: Sequence[OpCase], branches: Sequence[Any], precision: str
    ) -> list[np.ndarray | None]:
        """One compiled model for two or more ``cases`` (``None`` for each case left to run alone).
        A model that fails to build, compile or run is split in halves and each half tried again,
        so a bad case costs about log2(len(cases)) compiles and ends up alone."""
        if len(cases) < 2:
            return [None] * len(cases)
        run = self._run_fq_batch if kind == "fq" else self._run_onnx_batch
        try:
            values: list[np.ndarray | None] = list(run(cases, branches, precision))
        except BackendUnavailable:
            raise
        except Exception as err:  # noqa: BLE001 - split: one bad case costs only itself
            self.batch_counts["failed_batches"] += 1
            lines = str(err).strip().splitlines()  # OpenVINO puts the cause on the last line
            self.last_batch_error = f"{type(err).__name__}: {lines[-1] if lines else ''}"[:400]
            h = len(cases) // 2
            return self._try_batch(kind, cases[:h], branches[:h], precision) + self._try_batch(
                kind, cases[h:], branches[h:], precision
            )
        self.batch_counts["batched"] += len(cases)
        return values

    def _run_fq_batch(self, cases: Sequence[OpCase], branches: Sequence[Any], precision: str) -> list[np.ndarray]:
        import openvino as ov
        import openvino.opset13 as ops

        params, results = [], []
        for j, (shape, il, ih, ol, oh, levels) in enumerate(branches):
            param = ops.parameter(list(shape), ov.Type.f32, name=f"b{j}_x")
            fq = ops.fake_quantize(
                param, ops.constant(il), ops.constant(ih), ops.constant(ol), ops.constant(oh), levels
            )
            params.append(param)
            results.append(fq.output(0))
        compiled = self._compile(ov.Model(results, params, f"qverify_batch_{len(cases)}"), precision)
        feeds = {j: np.ascontiguousarray(c.inputs[0], np.float32) for j, c in enumerate(cases)}
        result = compiled(feeds)
        return [np.array(result[compiled.outputs[j]], copy=True) for j in range(len(cases))]

    def _run_onnx_batch(self, cases: Sequence[OpCase], branches: Sequence[Any], precision: str) -> list[np.ndarray]:
        merged = onnx_graphs.merge(branches)
        model = self._core.read_model(merged.serialized())
        shapes: dict[str, list[int]] = {}
        feeds: dict[str, np.ndarray] = {}
        for j, (case, built) in enumerate(zip(cases, branches)):
            for name, pos in zip(merged.input_names[j], built.feed_positions):
                shapes[name] = list(np.shape(case.inputs[pos]))
            feeds.update(merged.feeds(j, built, case))
        model.reshape(shapes)  # static, as _build_onnx does
        compiled = self._compile(model, precision)
        result = compiled(feeds)
        self._remember_branch_execution(compiled, cases, precision, [f"b{j}_" for j in range(len(cases))])
        return [np.array(result[compiled.output(names[0])], copy=True) for names in merged.output_names]

    def _remember_branch_execution(self, compiled, cases: Sequence[OpCase], precision: str, prefixes: Sequence[str]) -> None:
        """Split the batch model's runtime layers by branch (every original layer name of branch j
        starts with its prefix) and keep each branch's summary for :meth:`execution_info`."""
        layers = runtime_layers(compiled)
        if len(self._batch_info) > 4096:
            self._batch_info.clear()
        owner: dict[int, list[dict[str, str]]] = {}
        for lay in layers:
            names = [n.strip() for n in lay["originalLayersNames"].split(",") if n.strip()]
            hits = {j for j, p in enumerate(prefixes) for n in names if n.startswith(p)}
            if len(hits) == 1:  # a layer fused from one branch's nodes (plus unnamed constants)
                owner.setdefault(hits.pop(), []).append(lay)
        for j, case in enumerate(cases):
            self._batch_info[self._cache_key(case, precision)] = {**summarize_execution(owner.get(j, [])), "batched": True}

    def execution_info(self, case: OpCase, variant: Variant) -> dict[str, Any]:
        """What the runtime model of ``case`` ran: ``precision`` ``int8`` when every
        Convolution/MatMul ran on i8/u8, ``mixed``/``float`` when some/all fell back to float,
        ``none`` when the model has no such layer; plus the layers and their precisions. A case that
        ran as a branch of a :meth:`run_ops` batch model is described by its branch of that model
        (``batched`` True), which the batch tests prove computes what the single model computes."""
        key = self._cache_key(case, _precision(variant))
        if key in self._batch_info and key not in self._compiled:
            return dict(self._batch_info[key])
        return dict(self.compiled_for(case, variant)[2])

    # -- model level -----------------------------------------------------------------------------

    def open_model(
        self,
        files: Mapping[str, Path],
        *,
        threads: int = 1,
        options: Mapping[str, Any] | None = None,
    ) -> ModelSession:
        """Load ``openvino_ir`` (path of the ``.xml``) or else ``onnx_qdq`` (else ``onnx_dynamic``) and compile it on CPU
        with ``threads`` inference threads (default 1) and ``options["precision"]`` as
        INFERENCE_PRECISION_HINT (default ``"f32"``, so bf16 never changes the numerics)."""
        core = self._core
        fmt = self.pick_format(files)
        if fmt is None:
            raise ModelError(
                f"openvino can load none of the given formats {sorted(files)}",
                f"export one of: {', '.join(self.model_formats)}",
            )
        if int(threads) < 1:
            raise InputError(f"threads={threads} must be >= 1", "pass threads=1 or more")
        path = Path(files[fmt])
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist", "export the model first")
        if fmt == FORMAT_OPENVINO_IR and not path.with_suffix(".bin").is_file():
            raise ModelError(
                f"{path} has no weights file {path.with_suffix('.bin').name} beside it",
                "export the .xml and .bin together",
            )
        precision = str((options or {}).get("precision", "f32"))
        try:
            model = core.read_model(str(path))
            compiled = core.compile_model(model, DEVICE, compile_config(int(threads), precision))
        except Exception as err:
            first = str(err).strip().splitlines()
            raise ModelError(
                f"openvino cannot load {path}: {first[-1] if first else type(err).__name__}",
                "check the model with onnx.checker / openvino.convert_model",
            ) from None
        return OpenVinoModelSession(compiled, fmt, int(threads), precision, self.cpu_default_precision())


class OpenVinoModelSession(ModelSession):
    """A compiled model with one infer request; ``execution_info`` from its runtime model."""

    def __init__(self, compiled, fmt: str, threads: int, precision: str, cpu_default: str):
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self.input_names = [i.get_any_name() for i in compiled.inputs]
        self.output_names = [o.get_any_name() for o in compiled.outputs]
        summary = summarize_execution(runtime_layers(compiled))
        self.execution_info = {
            "format": fmt,
            "threads": threads,
            "inference_precision_hint": precision,
            "cpu_default_precision": cpu_default,
            **summary,
        }

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise InputError(f"feeds lack model input(s) {missing}", f"pass arrays for {self.input_names}")
        self._request.infer({n: np.ascontiguousarray(feeds[n]) for n in self.input_names})
        return [
            np.array(self._request.get_output_tensor(i).data, copy=True)
            for i in range(len(self.output_names))
        ]

    def close(self) -> None:
        self._request = None
        self._compiled = None


# ---------------------------------------------------------------------------------------------
# FakeQuantize parameters


def _fq_ranges(case: OpCase) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(il, ih, ol, oh, levels) as float32 arrays shaped to broadcast against x."""
    f32 = np.float32
    x = np.asarray(case.inputs[0])
    if case.op == "fake_quantize_range":
        il, ih, ol, oh = (np.asarray(a, f32) for a in case.inputs[1:5])
        levels = int(case.attrs["levels"])
        return il, ih, ol, oh, levels
    from qverify.reference.quantize import fake_quantize_ranges

    s = np.asarray(case.inputs[1], f32)
    z = np.asarray(case.inputs[2]).astype(np.int64)
    qmin, qmax = int(case.attrs["quant_min"]), int(case.attrs["quant_max"])
    if s.ndim:
        axis = int(case.attrs.get("axis", 1)) % x.ndim
        shape = [1] * x.ndim
        shape[axis] = s.size
        s = s.reshape(shape)
        z = np.broadcast_to(z.reshape(-1) if z.ndim else z, (s.size,)).reshape(shape)
    il, ih, levels = fake_quantize_ranges(s, z, qmin, qmax)
    return il, ih, il.copy(), ih.copy(), levels


def _fq_branch(case: OpCase) -> tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(shape, il, ih, ol, oh, levels) of a FakeQuantize branch, checked as ``_build_fq`` does."""
    x = np.asarray(case.inputs[0])
    if x.dtype != np.float32:
        raise InputError(f"{case.op}: x must be float32, got {x.dtype}", "pass x as float32")
    return (x.shape, *_fq_ranges(case))


def _fq_signature(case: OpCase):
    x = np.asarray(case.inputs[0])
    il, ih, ol, oh, levels = _fq_ranges(case)
    return (
        case.op,
        x.shape,
        x.dtype.str,
        levels,
        *((a.shape, a.tobytes()) for a in (il, ih, ol, oh)),
    )
