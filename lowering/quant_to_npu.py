"""`lower-quant-to-npu{arch=ember16}`: quant ops -> Ember NPU instructions.

The module's `func.func` (quant ops between the model's int8 inputs and outputs) becomes
a flat program of npu ops, one per instruction, layer after layer in the function's order
(see `npu_memory` for the module attributes that describe DRAM). Each quant op has a
lowering function in `LOWERINGS`; they tile the layer to the on-chip buffers
(`tiling.py`) and emit, per tile, LOAD -> compute -> STORE in program order. Overlap of
DMA and compute comes from the ping-pong placement of tiles here and the dependency tokens
that `npu-schedule` adds.

Mapping of the ops:
- conv2d (plain, grouped, depthwise, strided, dilated, padded with the input zero point by
  the LOAD) and fully_connected (a 1x1 conv): CONV into one half of the accumulator, then
  one fused POST: bias, per-channel requantization, clamp (ReLU/Clip), optional table.
  int16 inputs and results (`precision(..., int16)`) set CONV's `in_i16` and POST's
  `out_i16` (with the interpolated int16 table); their tiles move as bytes, two per
  element. Only convolutions write int16 tensors; convolutions, global average pooling
  (POOL sum's `in_i16`) and mul (ELTW's `a_i16`, the int16 operand as `a`) read them
  (the quantizer sees to it).
  POST runs on the store engine, so consecutive tiles alternate accumulator halves and
  the POST of tile k overlaps the CONV of tile k+1.
- conv_transpose (stride = kernel): the same 1x1 CONV + POST to kh*kw*Cout channels, with
  the depth-to-space done by the STOREs' DRAM strides (no extra pass over the data).
- add, mul: ELTW (per-channel broadcast of the operand that is `1 x C x 1 x 1`:
  squeeze-excitation; `capabilities.eltw_shapes_reason` is the shape rule).
- max_pool, avg_pool: POOL with the padding borders excluded (or counted, with the zero
  point, for count_include_pad). global_avg_pool: POOL sum into the accumulator over row
  tiles, then POST (a single rounding, as the reference).
- resize: RESIZE on row tiles, with the tile's source-coordinate offset.
- concat: each input requantized to the result by a 1x1 max POOL (identity windows) and
  stored into its slice of the result; an input of the same type is copied by DMA.
- lut: a 1x1 max POOL with the identity rescale through the table.
- reshape, transpose, slice, pad: strided DMA (a reshape that keeps the NHWC bytes is
  free: the result aliases the input).
- quantize / dequantize: only at the model boundary; they become the scale and zero point
  of the binary's inputs and outputs (the host converts). An input quantized to int16
  (read only by units that read int16) is an int16 NHWC input in IODESC.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr, TensorType
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.passes import ModulePass

from ember.dialects import quant
from ember.dialects.quant import array_values, quant_type_of
from ember.interpreters.quant_reference import resize_coordinates
from ember.lowering.npu_builder import ProgramBuilder, TensorView
from ember.lowering.npu_memory import Region
from ember.lowering.tiling import ConvTiling, TilingError, Window, plan_conv, plan_vector, window_span
from ember.support.diagnostics import EmberError
from ember.target.arch import Arch, load_arch
from ember.target.capabilities import eltw_shapes_reason, require_npu_support
from ember.target.isa import Buffer, EltwMode, Opcode, PoolMode, PostLut, ResizeMode

NODE_ATTR = "onnx_node"
ARG_NAME = "onnx.name"
OUTPUT_NAMES = "onnx.output_names"
PART_ATTR = "onnx.part"
IDENTITY_RESCALE = (1 << 30, 30)
"""(M, S) with M * 2^-S = 1: requantization that leaves a centred value unchanged."""
HOST_HINT = "run it on the host: compile with --autocrop"


def physical_dims(shape: tuple[int, ...], where: str) -> tuple[int, int, int]:
    """rows x cols x channels of a tensor in DRAM: NCHW -> NHWC for 4-D, else row-major
    with the last axis as channels."""
    if len(shape) == 4:
        n, c, h, w = shape
        if n != 1:
            raise EmberError(f"{where}: batch size {n}; the NPU runs batch 1, compile the model with batch 1")
        return h, w, c
    if not shape:
        return 1, 1, 1
    if len(shape) == 1:
        return 1, 1, shape[0]
    return math.prod(shape[:-2]), shape[-2], shape[-1]


def physical_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Byte stride of each logical axis in DRAM (NHWC for 4-D, row-major otherwise)."""
    if len(shape) == 4:
        _, c, h, w = shape
        return (h * w * c, 1, w * c, c)
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= d
    return tuple(reversed(strides))


def _physical_order(rank: int) -> tuple[int, ...]:
    """Logical axes from outermost to innermost in DRAM."""
    return (0, 2, 3, 1) if rank == 4 else tuple(range(rank))


def _shape(value: SSAValue) -> tuple[int, ...]:
    assert isinstance(value.type, TensorType)
    return value.type.get_shape()


def _int(attr) -> int:
    return attr.value.data


@dataclass
class _Lowering:
    """State of one lowering: the builder and where every SSA value lives."""

    arch: Arch
    builder: ProgramBuilder
    views: dict[SSAValue, TensorView] = field(default_factory=dict)
    outputs: dict[SSAValue, tuple[str, quant.UniformQuantizedType]] = field(default_factory=dict)
    op_index: int = 0

    # ---------------------------------------------------------------- naming

    def node_of(self, op: Operation) -> str:
        attr = op.attributes.get(NODE_ATTR)
        if isinstance(attr, StringAttr) and attr.data:
            return attr.data
        hint = op.results[0].name_hint if op.results else None
        return hint or f"{op.name}_{self.op_index}"

    def _unique(self, name: str) -> str:
        unique, k = name, 1
        while unique in self.builder.regions:
            unique, k = f"{name}#{k}", k + 1
        return unique

    def tensor_name(self, value: SSAValue) -> str:
        owner = value.owner
        if isinstance(owner, Operation):
            names = owner.attributes.get("onnx_outputs")
            if isinstance(names, ArrayAttr) and len(names.data) > value.index:
                entry = names.data[value.index]
                if isinstance(entry, StringAttr) and entry.data:
                    return entry.data
        return value.name_hint or f"{self.builder.node or 't'}:{value.index}"

    # --------------------------------------------------------------- tensors

    def define(self, value: SSAValue) -> TensorView:
        """The DRAM region of an op result: a model output or scratch."""
        shape = _shape(value)
        rows, cols, chans = physical_dims(shape, self.builder.node)
        elem_bytes = _elem_bytes(value)
        if value in self.outputs:
            if elem_bytes != 1:
                raise EmberError(f"{self.builder.node}: the model output '{self.outputs[value][0]}' is int16; keep the layer"
                                 " that computes it int8 (model script precision)")  # fmt: skip
            name, qtype = self.outputs[value]
            region = Region(
                self._unique(name), "output", rows * cols * chans, _io_shape(shape), _layout(shape),
                self.builder.node, qtype.scale, qtype.zero_point,
            )  # fmt: skip
        else:
            region = Region(self._unique(self.tensor_name(value)), "scratch", rows * cols * chans * elem_bytes,
                            _io_shape(shape), _layout(shape), self.builder.node, extra=_dtype_extra(elem_bytes))  # fmt: skip
        self.builder.add_region(region)
        view = TensorView(region.name, rows, cols, chans, elem_bytes)
        self.views[value] = view
        return view

    def view(self, value: SSAValue) -> TensorView:
        """Where an operand lives; constants used as activations get a const region."""
        if value in self.views:
            return self.views[value]
        owner = value.owner
        if isinstance(owner, quant.ConstantOp):
            shape = _shape(value)
            data = owner.numpy()
            if data.ndim == 4:
                data = data.transpose(0, 2, 3, 1)
            rows, cols, chans = physical_dims(shape, self.builder.node)
            region = self.builder.const(self.tensor_name(value), np.ascontiguousarray(data).astype(np.int8))
            view = TensorView(region, rows, cols, chans)
            self.views[value] = view
            return view
        producer = owner.name if isinstance(owner, Operation) else "a float model input"
        raise EmberError(
            f"{self.builder.node}: operand '{self.tensor_name(value)}' comes from {producer}, which the NPU"
            f" does not run; {HOST_HINT}"
        )


def _elem_bytes(value: SSAValue) -> int:
    """Bytes per element of a quantized activation: 1 (int8) or 2 (int16)."""
    return quant_type_of(value).storage_dtype.itemsize


def _dtype_extra(elem_bytes: int) -> dict[str, Attribute]:
    """Region attributes naming an int16 tensor's dtype in IODESC / MEMMAP (int8 is the default)."""
    return {"dtype": StringAttr("int16")} if elem_bytes == 2 else {}


INT16_OPS = (quant.Conv2DOp, quant.ConvTransposeOp, quant.GlobalAvgPoolOp)
"""The quant ops whose NPU form reads an int16 first operand (CONV, POOL sum); only
conv2d also writes it (POST). quant.mul reads one full-shaped int16 operand (ELTW)."""


def _check_int16(node: str, op: Operation) -> None:
    """int16 activations only where CONV, POOL sum and ELTW mul read and POST writes them."""
    wide = [v for v in (*op.operands, *op.results) if isinstance(v.type, TensorType)
            and isinstance(v.type.element_type, quant.UniformQuantizedType) and _elem_bytes(v) == 2]  # fmt: skip
    allowed = set()
    if isinstance(op, INT16_OPS):
        allowed.add(op.operands[0])
    if isinstance(op, quant.Conv2DOp):
        allowed.add(op.results[0])
    if isinstance(op, quant.MulOp) and len(wide) == 1 and _shape(wide[0]) == _shape(op.output):
        allowed.add(wide[0])
    if any(v not in allowed for v in wide):
        raise EmberError(f"{node}: {op.name} on int16 tensors; the NPU reads int16 only in convolutions, global"
                         " average pooling and one full-shaped operand of a product, and writes it only from"
                         " convolutions; keep this layer's neighbours int8 (model script precision)")  # fmt: skip


def _io_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 4:
        n, c, h, w = shape
        return (n, h, w, c)
    return shape


def _layout(shape: tuple[int, ...]) -> str:
    return "NHWC" if len(shape) == 4 else "row-major"


# ------------------------------------------------------------------ slot planning


@dataclass(frozen=True)
class _Slots:
    """Ping-pong placement of input tiles (from the bottom of the input buffer, after
    `extra` elements) and result tiles (from the top). Keeping results at the top means
    the next layer's first input tiles rarely reuse bytes whose STORE is still pending."""

    capacity: int
    in_size: int
    out_size: int
    extra: int = 0
    phase: int = 0
    """Parity of the first tile: a layer starts on the slot its predecessor did not end on."""

    def inp(self, t: int) -> int:
        return self.extra + ((t + self.phase) % 2) * self.in_size

    def out(self, t: int) -> int:
        return self.capacity - ((t + self.phase) % 2 + 1) * self.out_size


def _load_params(lw: _Lowering, region: str, channels: int, c0: int, count: int) -> int:
    """LOAD rows bias/multiplier/shift [3, total] columns [c0, c0 + count) into `par`."""
    addr = lw.builder.param_slot()
    lw.builder.load(Buffer.PAR, addr, region, 4 * c0, (3, 1, count), (4 * channels, 4, 4))
    return addr


def _load_lut(lw: _Lowering, table: np.ndarray) -> int:
    """LOAD a table (256 int8 or 513 little-endian int16 entries) into a `lut` slot."""
    data = np.asarray(table, dtype="<i2" if table.dtype == np.int16 else np.int8)
    region = lw.builder.const(f"{lw.builder.node}.lut", data)
    addr = lw.builder.lut_slot(data.nbytes)
    lw.builder.load_const(Buffer.LUT, addr, region, data.nbytes)
    return addr


def _tiles(total: int, step: int):
    for start in range(0, total, step):
        yield start, min(start + step, total)


# --------------------------------------------------------------------- convolution


@dataclass(frozen=True)
class _ConvLayer:
    weights: np.ndarray  # int8 [oc, kh, kw, ic/groups]
    bias: np.ndarray  # int32 [oc]
    multiplier: np.ndarray
    shift: np.ndarray
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    groups: int
    in_zp: int
    out_zp: int
    act: tuple[int, int]
    lut: np.ndarray | None  # int8 [256], or int16 [513] for an int16 result


TileStore = Callable[[int, tuple[int, int], tuple[int, int], tuple[int, int]], None]
"""Writes the result tile at an input-buffer address: (address, rows, cols, channels)."""


def _conv_layer(lw: _Lowering, x: TensorView, y: TensorView, layer: _ConvLayer, plan: ConvTiling | None = None,
                store: TileStore | None = None) -> None:
    """CONV (+ accumulate over input-channel chunks) and POST per output tile; `y` gives the
    output geometry, `store` (default: a STORE into `y`) writes each result tile."""
    b = lw.builder
    oc_total, kh, kw, icg = layer.weights.shape
    groups = layer.groups
    ocg = oc_total // groups
    window = Window(y.rows, y.cols, (kh, kw), layer.stride, layer.dilation)
    if max(kh, kw, *layer.stride, *layer.dilation, *layer.pads) > 255:
        raise EmberError(f"{b.node}: kernel, stride, dilation and padding must be at most 255 for the NPU; {HOST_HINT}")
    if plan is None:
        try:
            plan = plan_conv(lw.arch, window, x.channels, oc_total, groups, in_bytes=x.elem_bytes, out_bytes=y.elem_bytes)
        except TilingError as err:
            raise EmberError(f"{b.node}: cannot tile for {lw.arch.name}: {err}; {HOST_HINT}") from None
    if store is None:

        def store(out: int, rows: tuple[int, int], cols: tuple[int, int], chans: tuple[int, int]) -> None:
            b.store_tile(out, y, rows, cols, chans)

    weights = b.const(f"{b.node}.weights", layer.weights)
    params = b.const(
        f"{b.node}.params",
        np.stack([layer.bias, layer.multiplier, layer.shift]).astype("<i4"),
    )
    lut = _load_lut(lw, layer.lut) if layer.lut is not None else 0
    lut_mode = PostLut.NONE if layer.lut is None else PostLut.INT16 if layer.lut.dtype == np.int16 else PostLut.INT8
    taps = kh * kw
    tile = plan.tile
    grouped = groups > 1
    top, left, bottom, right = layer.pads
    t = 0
    for oc0, oc1 in _tiles(oc_total, plan.oc_block):
        ocb = oc1 - oc0
        ic_base = (oc0 // ocg) * icg if grouped else 0
        ic_block = (ocb // ocg) * icg if grouped else x.channels
        chunks = list(_tiles(ic_block, plan.ic_chunk if not grouped else ic_block))
        par = _load_params(lw, params, oc_total, oc0, ocb)
        wgt = 0
        if len(chunks) == 1:
            wgt = b.weight_slot()
            b.load(Buffer.WGT, wgt, weights, oc0 * taps * icg, (ocb, taps, icg), (taps * icg, icg, 1))
        in_max = max(window.input_extent(tile.rows, tile.cols)[0] * window.input_extent(tile.rows, tile.cols)[1]
                     * (c1 - c0) for c0, c1 in chunks) * x.elem_bytes  # fmt: skip
        slots = _Slots(lw.arch.input_buffer_bytes, in_max, tile.rows * tile.cols * ocb * y.elem_bytes, phase=b.tile_phase)
        for r0, r1 in _tiles(y.rows, tile.rows):
            rlo, rhi, ptop, pbot = window_span(r0, r1, layer.stride[0], layer.dilation[0], kh, top, x.rows)
            for c0, c1 in _tiles(y.cols, tile.cols):
                clo, chi, pleft, pright = window_span(c0, c1, layer.stride[1], layer.dilation[1], kw, left, x.cols)
                if rhi <= rlo or chi <= clo:
                    raise EmberError(f"{b.node}: an output tile sees only padding; reduce the padding ({HOST_HINT})")
                ih, iw = ptop + (rhi - rlo) + pbot, pleft + (chi - clo) + pright
                acc = b.acc_slot()
                for k, (i0, i1) in enumerate(chunks):
                    if len(chunks) > 1:
                        wgt = b.weight_slot()
                        b.load(Buffer.WGT, wgt, weights, oc0 * taps * icg + i0, (ocb, taps, i1 - i0), (taps * icg, icg, 1))
                    inp = slots.inp(t)
                    b.load_tile(inp, x, (rlo, rhi), (clo, chi), (ic_base + i0, ic_base + i1),
                                (ptop, pbot, pleft, pright), layer.in_zp)  # fmt: skip
                    b.emit(
                        Opcode.CONV, inp=inp, wgt=wgt, acc=acc, ih=ih, iw=iw, ic=i1 - i0, oc=ocb,
                        groups=ocb // ocg if grouped else 1, kh=kh, kw=kw, sh=layer.stride[0], sw=layer.stride[1],
                        dh=layer.dilation[0], dw=layer.dilation[1], in_zp=layer.in_zp, accumulate=int(k > 0),
                        in_i16=int(x.elem_bytes == 2),
                    )  # fmt: skip
                    t += 1
                out = slots.out(t)
                b.emit(
                    Opcode.POST, acc=acc, par=par, out=out, lut=lut, count=(r1 - r0) * (c1 - c0), channels=ocb,
                    zp_out=layer.out_zp, act_min=layer.act[0], act_max=layer.act[1], use_lut=lut_mode,
                    out_i16=int(y.elem_bytes == 2),
                )  # fmt: skip
                store(out, (r0, r1), (c0, c1), (oc0, oc1))
    b.tile_phase = (b.tile_phase + t) % 2


def _requant_fields(op: quant.Conv2DOp | quant.ConvTransposeOp | quant.FullyConnectedOp, oc: int) -> dict:
    bias = np.zeros(oc, dtype=np.int64)
    if op.bias is not None:
        owner = op.bias.owner
        if not isinstance(owner, quant.ConstantOp):
            raise EmberError(f"{op.name}: the bias must be a quant.constant")
        bias = owner.numpy().astype(np.int64)
    return dict(
        bias=bias,
        multiplier=array_values(op.multiplier),
        shift=array_values(op.shift),
        out_zp=op.requant_zero_point(),
        act=(_int(op.act_min), _int(op.act_max)),
        lut=op.table(),
    )


def _constant(value: SSAValue, what: str, node: str) -> np.ndarray:
    owner = value.owner
    if not isinstance(owner, quant.ConstantOp):
        raise EmberError(f"{node}: the {what} must be constant for the NPU; {HOST_HINT}")
    return owner.numpy()


def lower_conv2d(lw: _Lowering, op: quant.Conv2DOp) -> None:
    x = lw.view(op.input)
    y = lw.define(op.output)
    w = _constant(op.weight, "weights", lw.builder.node)  # [oc, ic/g, kh, kw]
    pads = tuple(int(p) for p in array_values(op.pads))
    layer = _ConvLayer(
        weights=np.ascontiguousarray(w.transpose(0, 2, 3, 1)).astype(np.int8),
        stride=tuple(int(s) for s in array_values(op.strides)),
        dilation=tuple(int(d) for d in array_values(op.dilations)),
        pads=pads,
        groups=_int(op.group),
        in_zp=quant_type_of(op.input).zero_point,
        **_requant_fields(op, w.shape[0]),
    )
    _conv_layer(lw, x, y, layer)


def lower_conv_transpose(lw: _Lowering, op: quant.ConvTransposeOp) -> None:
    """A 1x1 convolution to kh*kw*Cout channels whose STOREs do the depth-to-space.

    Channel `(i*kw + j)*Cout + o` of input pixel (y, x) is output (kh*y + i, kw*x + j, o):
    bias and multipliers repeat per (i, j) block, and for each row of a result tile one
    STORE writes its [cols, kh, kw*Cout] box to output rows kh*y .. kh*y + kh-1. That needs
    every channel of a pixel in one tile; when the expanded block does not fit the buffers
    (or the conv is grouped), each tap (i, j) is its own 1x1 convolution stored to rows
    kh*y + i, columns kw*x + j."""
    b = lw.builder
    x = lw.view(op.input)
    y = lw.define(op.output)
    w = _constant(op.weight, "weights", b.node)  # [oc, ic/g, kh, kw]
    oc, icg, kh, kw = w.shape
    group = _int(op.group)
    fields = _requant_fields(op, oc)
    in_zp = quant_type_of(op.input).zero_point
    taps = kh * kw
    try:
        plan = plan_conv(lw.arch, Window(x.rows, x.cols, (1, 1)), x.channels, taps * oc, 1, whole_oc=True,
                         in_bytes=x.elem_bytes) if group == 1 else None  # fmt: skip
    except TilingError:
        plan = None
    if plan is not None:
        tiled = {k: np.tile(fields.pop(k), taps) for k in ("bias", "multiplier", "shift")}
        layer = _ConvLayer(
            weights=np.ascontiguousarray(w.transpose(2, 3, 0, 1).reshape(taps * oc, 1, 1, icg)).astype(np.int8),
            stride=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0), groups=1, in_zp=in_zp, **tiled, **fields,
        )  # fmt: skip

        def store_rows(out: int, rows: tuple[int, int], cols: tuple[int, int], chans: tuple[int, int]) -> None:
            width = cols[1] - cols[0]
            for r in range(*rows):
                b.store(out + (r - rows[0]) * width * taps * oc, y.region, y.offset(kh * r, kw * cols[0]),
                        (width, kh, kw * oc), (kw * oc, y.row_stride, 1))  # fmt: skip

        _conv_layer(lw, x, TensorView(y.region, x.rows, x.cols, taps * oc), layer, plan, store_rows)
        return
    for i in range(kh):
        for j in range(kw):
            layer = _ConvLayer(
                weights=np.ascontiguousarray(w[:, :, i, j].reshape(oc, 1, 1, icg)).astype(np.int8),
                stride=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0), groups=group, in_zp=in_zp, **fields,
            )  # fmt: skip
            _conv_layer(lw, x, TensorView(y.region, x.rows, x.cols, oc), layer, store=_tap_store(b, y, (kh, kw), (i, j)))


def _tap_store(b: ProgramBuilder, y: TensorView, kernel: tuple[int, int], tap: tuple[int, int]) -> TileStore:
    """STORE of a transposed convolution's tap (i, j): input pixel (r, c) goes to output
    (kh*r + i, kw*c + j)."""
    (kh, kw), (i, j) = kernel, tap

    def store(out: int, rows: tuple[int, int], cols: tuple[int, int], chans: tuple[int, int]) -> None:
        b.store(out, y.region, y.offset(kh * rows[0] + i, kw * cols[0] + j, chans[0]),
                (rows[1] - rows[0], cols[1] - cols[0], chans[1] - chans[0]), (kh * y.row_stride, kw * y.channels, 1))  # fmt: skip

    return store


def lower_fully_connected(lw: _Lowering, op: quant.FullyConnectedOp) -> None:
    x = lw.view(op.input)
    y = lw.define(op.output)
    w = _constant(op.weight, "weights", lw.builder.node)  # [n, k]
    layer = _ConvLayer(
        weights=np.ascontiguousarray(w[:, None, None, :]).astype(np.int8),
        stride=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0), groups=1,
        in_zp=quant_type_of(op.input).zero_point,
        **_requant_fields(op, w.shape[0]),
    )  # fmt: skip
    _conv_layer(lw, x, y, layer)


# --------------------------------------------------------------------- elementwise


def _eltw(lw: _Lowering, op: quant.AddOp | quant.MulOp, fields: Callable[[bool], dict]) -> None:
    b = lw.builder
    out_shape = _shape(op.output)
    lhs, rhs = op.lhs, op.rhs
    swapped = False
    # ELTW's `a` is the full-shaped operand, and the int16 one (_check_int16: mul only)
    if (_shape(lhs) != out_shape and _shape(rhs) == out_shape) or _elem_bytes(rhs) == 2:
        lhs, rhs, swapped = rhs, lhs, True
    broadcast = _shape(rhs) != out_shape
    if (reason := eltw_shapes_reason(_shape(lhs), _shape(rhs), out_shape)) is not None:
        raise EmberError(f"{b.node}: {op.name} of shapes {_shape(op.lhs)} and {_shape(op.rhs)}: {reason}; {HOST_HINT}")
    a, bv = lw.view(lhs), lw.view(rhs)
    y = lw.define(op.output)
    count = y.rows * y.cols
    channels = y.channels
    try:
        tile = plan_vector(lw.arch, Window(1, count, (1, 1)), channels, in_bytes=a.elem_bytes + (0 if broadcast else 1))
    except TilingError as err:
        raise EmberError(f"{b.node}: cannot tile for {lw.arch.name}: {err}; {HOST_HINT}") from None
    step = tile.cols
    per = step * channels
    a_size = per * a.elem_bytes
    in_size = a_size + (0 if broadcast else per)
    extra = channels if broadcast else 0
    if a.elem_bytes == 2:  # int16 tiles start at even addresses
        in_size, extra = in_size + in_size % 2, extra + extra % 2
    slots = _Slots(lw.arch.input_buffer_bytes, in_size, per, extra)
    if broadcast:
        b.load(Buffer.INP, 0, bv.region, 0, (1, 1, channels), (channels, channels, 1))
    flat_a = TensorView(a.region, 1, count, channels, a.elem_bytes)
    flat_b = TensorView(bv.region, 1, count, channels)
    flat_y = TensorView(y.region, 1, count, channels)
    common = dict(
        zp_a=quant_type_of(lhs).zero_point, zp_b=quant_type_of(rhs).zero_point, zp_out=quant_type_of(op.output).zero_point,
        act_min=_int(op.act_min), act_max=_int(op.act_max), broadcast_b=int(broadcast), a_i16=int(a.elem_bytes == 2),
        **fields(swapped),
    )  # fmt: skip
    for t, (p0, p1) in enumerate(_tiles(count, step)):
        n = p1 - p0
        a_addr = slots.inp(t)
        b.load_tile(a_addr, flat_a, (0, 1), (p0, p1), (0, channels))
        b_addr = 0
        if not broadcast:
            b_addr = a_addr + a_size
            b.load_tile(b_addr, flat_b, (0, 1), (p0, p1), (0, channels))
        out = slots.out(t)
        b.emit(Opcode.ELTW, a=a_addr, b=b_addr, out=out, count=n, channels=channels, **common)
        b.store_tile(out, flat_y, (0, 1), (p0, p1), (0, channels))


def lower_add(lw: _Lowering, op: quant.AddOp) -> None:
    m = array_values(op.input_multipliers)
    s = array_values(op.input_shifts)

    def fields(swapped: bool) -> dict:
        i, j = (1, 0) if swapped else (0, 1)
        return dict(
            mode=EltwMode.ADD, mult_a=int(m[i]), shift_a=int(s[i]), mult_b=int(m[j]), shift_b=int(s[j]),
            mult_out=_int(op.multiplier), shift_out=_int(op.shift),
        )  # fmt: skip

    _eltw(lw, op, fields)


def lower_mul(lw: _Lowering, op: quant.MulOp) -> None:
    _eltw(lw, op, lambda swapped: dict(mode=EltwMode.MUL, mult_out=_int(op.multiplier), shift_out=_int(op.shift)))


# ------------------------------------------------------------------------ pooling


@dataclass(frozen=True)
class _PoolLayer:
    mode: PoolMode
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    exclude_pads: bool
    pad_value: int
    zp_in: int
    zp_out: int
    rescale: tuple[int, int]
    act: tuple[int, int] = (-128, 127)
    lut: np.ndarray | None = None


def _pool_layer(lw: _Lowering, x: TensorView, y: TensorView, layer: _PoolLayer, channel_offset: int = 0) -> None:
    """POOL per output row tile into `y` (at `channel_offset` of its channels: concat)."""
    b = lw.builder
    kh, kw = layer.kernel
    top, left, _, _ = layer.pads
    out_rows = (x.rows + layer.pads[0] + layer.pads[2] - kh) // layer.stride[0] + 1
    out_cols = (x.cols + layer.pads[1] + layer.pads[3] - kw) // layer.stride[1] + 1
    window = Window(out_rows, out_cols, layer.kernel, layer.stride)
    if max(*layer.stride, *layer.pads) > 255:
        raise EmberError(f"{b.node}: pooling stride and padding must be at most 255 for the NPU; {HOST_HINT}")
    try:
        tile = plan_vector(lw.arch, window, x.channels)
    except TilingError as err:
        raise EmberError(f"{b.node}: cannot tile for {lw.arch.name}: {err}; {HOST_HINT}") from None
    lut = _load_lut(lw, layer.lut) if layer.lut is not None else 0
    ih_max, iw_max = window.input_extent(tile.rows, tile.cols)
    slots = _Slots(lw.arch.input_buffer_bytes, ih_max * iw_max * x.channels, tile.rows * tile.cols * x.channels)
    t = 0
    for r0, r1 in _tiles(out_rows, tile.rows):
        rlo, rhi, ptop, pbot = window_span(r0, r1, layer.stride[0], 1, kh, top, x.rows)
        for c0, c1 in _tiles(out_cols, tile.cols):
            clo, chi, pleft, pright = window_span(c0, c1, layer.stride[1], 1, kw, left, x.cols)
            inp, out = slots.inp(t), slots.out(t)
            b.load_tile(inp, x, (rlo, rhi), (clo, chi), (0, x.channels), (ptop, pbot, pleft, pright), layer.pad_value)
            excluded = (ptop, pbot, pleft, pright) if layer.exclude_pads else (0, 0, 0, 0)
            b.emit(
                Opcode.POOL, inp=inp, out=out, lut=lut, multiplier=layer.rescale[0], shift=layer.rescale[1],
                ih=ptop + rhi - rlo + pbot, iw=pleft + chi - clo + pright, channels=x.channels, kh=kh, kw=kw,
                sh=layer.stride[0], sw=layer.stride[1], pad_top=excluded[0], pad_bottom=excluded[1],
                pad_left=excluded[2], pad_right=excluded[3], zp_in=layer.zp_in, zp_out=layer.zp_out,
                act_min=layer.act[0], act_max=layer.act[1], mode=layer.mode, use_lut=int(layer.lut is not None),
            )  # fmt: skip
            b.store_tile(out, y, (r0, r1), (c0, c1), (channel_offset, channel_offset + x.channels))
            t += 1


def lower_max_pool(lw: _Lowering, op: quant.MaxPoolOp) -> None:
    if np.any(array_values(op.dilations) != 1):
        raise EmberError(f"{lw.builder.node}: dilated max pooling has no NPU instruction; {HOST_HINT}")
    zp = quant_type_of(op.input).zero_point
    top, left, bottom, right = (int(p) for p in array_values(op.pads))
    layer = _PoolLayer(
        PoolMode.MAX, tuple(int(k) for k in array_values(op.kernel)), tuple(int(s) for s in array_values(op.strides)),
        (top, left, bottom, right), True, -128, zp, zp, IDENTITY_RESCALE,
    )  # fmt: skip
    _pool_layer(lw, lw.view(op.input), lw.define(op.output), layer)


def lower_avg_pool(lw: _Lowering, op: quant.AvgPoolOp) -> None:
    zp_in = quant_type_of(op.input).zero_point
    top, left, bottom, right = (int(p) for p in array_values(op.pads))
    include = bool(_int(op.count_include_pad))
    layer = _PoolLayer(
        PoolMode.AVG, tuple(int(k) for k in array_values(op.kernel)), tuple(int(s) for s in array_values(op.strides)),
        (top, left, bottom, right), not include, zp_in, zp_in, quant_type_of(op.output).zero_point,
        (_int(op.multiplier), _int(op.shift)),
    )  # fmt: skip
    _pool_layer(lw, lw.view(op.input), lw.define(op.output), layer)


def lower_global_avg_pool(lw: _Lowering, op: quant.GlobalAvgPoolOp) -> None:
    """POOL sum of row tiles into the accumulator (accumulating), then one POST."""
    b = lw.builder
    x = lw.view(op.input)
    y = lw.define(op.output)
    channels = x.channels
    if x.cols > 0xFFFF:
        raise EmberError(f"{b.node}: rows of {x.cols} pixels exceed the POOL window limit; {HOST_HINT}")
    params = b.const(
        f"{b.node}.params",
        np.stack([np.zeros(channels), np.full(channels, _int(op.multiplier)), np.full(channels, _int(op.shift))]).astype("<i4"),
    )  # fmt: skip
    try:
        tile = plan_vector(lw.arch, Window(x.rows, 1, (1, x.cols)), channels, in_bytes=x.elem_bytes)
    except TilingError as err:
        raise EmberError(f"{b.node}: cannot tile for {lw.arch.name}: {err}; {HOST_HINT}") from None
    par = _load_params(lw, params, channels, 0, channels)
    slots = _Slots(lw.arch.input_buffer_bytes, tile.rows * x.cols * channels * x.elem_bytes, channels)
    zp_in = quant_type_of(op.input).zero_point
    acc = b.acc_slot()
    for t, (r0, r1) in enumerate(_tiles(x.rows, tile.rows)):
        inp = slots.inp(t)
        b.load_tile(inp, x, (r0, r1), (0, x.cols), (0, channels))
        b.emit(
            Opcode.POOL, inp=inp, out=acc, ih=r1 - r0, iw=x.cols, channels=channels, kh=r1 - r0, kw=x.cols, sh=1, sw=1,
            zp_in=zp_in, mode=PoolMode.SUM, accumulate=int(t > 0), act_min=-128, act_max=127, in_i16=int(x.elem_bytes == 2),
        )  # fmt: skip
    out = slots.out(0)
    b.emit(Opcode.POST, acc=acc, par=par, out=out, count=1, channels=channels,
           zp_out=quant_type_of(op.output).zero_point, act_min=-128, act_max=127)  # fmt: skip
    b.store_tile(out, y, (0, 1), (0, 1), (0, channels))


# ------------------------------------------------------------------- rescale copies


def _rescale_into(
    lw: _Lowering,
    x: TensorView,
    x_type: quant.UniformQuantizedType,
    y: TensorView,
    y_type: quant.UniformQuantizedType,
    rescale: tuple[int, int],
    channel_offset: int = 0,
    row_offset: int = 0,
    col_offset: int = 0,
    lut: np.ndarray | None = None,
) -> None:
    """Copy x into y at the given offsets, requantized with `rescale` (and a table): a
    1x1 max POOL, or DMA alone when nothing changes the values."""
    b = lw.builder
    identity = lut is None and tuple(rescale) == IDENTITY_RESCALE and x_type.zero_point == y_type.zero_point
    if not identity or row_offset or col_offset:
        if not identity:
            layer = _PoolLayer(PoolMode.MAX, (1, 1), (1, 1), (0, 0, 0, 0), False, 0, x_type.zero_point,
                               y_type.zero_point, rescale, lut=lut)  # fmt: skip
            if row_offset or col_offset:
                raise EmberError(f"{b.node}: concat of differently scaled inputs along H or W; {HOST_HINT}")
            _pool_layer(lw, x, y, layer, channel_offset)
            return
    try:
        tile = plan_vector(lw.arch, Window(x.rows, x.cols, (1, 1)), x.channels)
    except TilingError as err:
        raise EmberError(f"{b.node}: cannot tile for {lw.arch.name}: {err}; {HOST_HINT}") from None
    slots = _Slots(lw.arch.input_buffer_bytes, tile.rows * tile.cols * x.channels, 0)
    t = 0
    for r0, r1 in _tiles(x.rows, tile.rows):
        for c0, c1 in _tiles(x.cols, tile.cols):
            addr = slots.inp(t)
            b.load_tile(addr, x, (r0, r1), (c0, c1), (0, x.channels))
            b.store_tile(addr, y, (row_offset + r0, row_offset + r1), (col_offset + c0, col_offset + c1),
                         (channel_offset, channel_offset + x.channels))  # fmt: skip
            t += 1


def lower_concat(lw: _Lowering, op: quant.ConcatOp) -> None:
    out_shape = _shape(op.output)
    axis = _int(op.axis)
    y = lw.define(op.output)
    y_type = quant_type_of(op.output)
    multipliers, shifts = array_values(op.multipliers), array_values(op.shifts)
    physical_axis = {1: 2, 2: 0, 3: 1}.get(axis) if len(out_shape) == 4 else (
        2 if axis == len(out_shape) - 1 else None)  # fmt: skip
    if physical_axis is None:
        raise EmberError(f"{lw.builder.node}: concat along axis {axis} of a {len(out_shape)}-D tensor; {HOST_HINT}")
    offset = 0
    for value, m, s in zip(op.inputs, multipliers, shifts, strict=True):
        x = lw.view(value)
        offsets = [0, 0, 0]
        offsets[physical_axis] = offset
        _rescale_into(lw, x, quant_type_of(value), y, y_type, (int(m), int(s)), offsets[2], offsets[0], offsets[1])
        offset += (x.rows, x.cols, x.channels)[physical_axis]


def lower_lut(lw: _Lowering, op: quant.LutOp) -> None:
    x_type = quant_type_of(op.input)
    y_type = quant_type_of(op.output)
    x = lw.view(op.input)
    y = lw.define(op.output)
    # identity requantization onto the input's own zero point, then the table
    same = quant.UniformQuantizedType(y_type.storage_type, y_type.scale, x_type.zero_point)
    layer = _PoolLayer(PoolMode.MAX, (1, 1), (1, 1), (0, 0, 0, 0), False, 0, x_type.zero_point, same.zero_point,
                       IDENTITY_RESCALE, lut=array_values(op.table).astype(np.int8))  # fmt: skip
    _pool_layer(lw, x, y, layer)


# ------------------------------------------------------------------------- resize


def lower_resize(lw: _Lowering, op: quant.ResizeOp) -> None:
    b = lw.builder
    x = lw.view(op.input)
    y = lw.define(op.output)
    mode = op.mode.data
    coords = (op.coordinate_transformation_mode.data, op.nearest_mode.data)
    step_y, offset_y = resize_coordinates(x.rows, y.rows, mode, *coords)
    step_x, offset_x = resize_coordinates(x.cols, y.cols, mode, *coords)
    bilinear = mode == "bilinear"
    channels = x.channels

    def source_rows(o0: int, o1: int) -> tuple[int, int]:
        s0, s1 = offset_y + o0 * step_y, offset_y + (o1 - 1) * step_y
        top = (x.rows - 1) << 16
        lo = min(max(s0, 0), top) >> 16
        hi = min(max(s1, 0), top) >> 16
        if bilinear:
            hi = min(hi + 1, x.rows - 1)
        return lo, hi + 1

    def fits(rows: int) -> bool:
        in_rows = min(x.rows, ((rows - 1) * step_y >> 16) + 3)
        return 2 * (in_rows * x.cols + rows * y.cols) * channels <= lw.arch.input_buffer_bytes

    if not fits(1):
        raise EmberError(f"{b.node}: one output row of the resize does not fit the input buffer; {HOST_HINT}")
    lo, hi = 1, y.rows
    while lo < hi:  # the most output rows whose tiles fit
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    rows = lo
    in_max = max(source_rows(r0, r1)[1] - source_rows(r0, r1)[0] for r0, r1 in _tiles(y.rows, rows))
    slots = _Slots(lw.arch.input_buffer_bytes, in_max * x.cols * channels, rows * y.cols * channels)
    for t, (r0, r1) in enumerate(_tiles(y.rows, rows)):
        lo, hi = source_rows(r0, r1)
        inp, out = slots.inp(t), slots.out(t)
        b.load_tile(inp, x, (lo, hi), (0, x.cols), (0, channels))
        b.emit(
            Opcode.RESIZE, inp=inp, out=out, step_y=step_y, offset_y=offset_y + r0 * step_y - (lo << 16),
            step_x=step_x, offset_x=offset_x, multiplier=_int(op.multiplier), shift=_int(op.shift),
            ih=hi - lo, iw=x.cols, oh=r1 - r0, ow=y.cols, channels=channels, zp_in=quant_type_of(op.input).zero_point,
            zp_out=quant_type_of(op.output).zero_point, act_min=-128, act_max=127,
            mode=ResizeMode.BILINEAR if bilinear else ResizeMode.NEAREST,
        )  # fmt: skip
        b.store_tile(out, y, (r0, r1), (0, y.cols), (0, channels))


# ------------------------------------------------------------------------- layout


def _affine_copy(lw: _Lowering, dims: list[tuple[int, int, int]], src: str, src_offset: int, dst: str,
                 dst_offset: int) -> None:
    """Move a box of int8 elements: `dims` lists (size, source stride, destination stride)
    from outermost to innermost. Runs of contiguous axes merge; the box is cut along its
    outer axes into LOAD/STORE pairs that fit half the input buffer."""
    b = lw.builder
    merged: list[list[int]] = []
    for size, ss, ds in dims:
        if size == 1:
            continue
        if merged and merged[-1][1] == size * ss and merged[-1][2] == size * ds:
            merged[-1] = [merged[-1][0] * size, ss, ds]
        else:
            merged.append([size, ss, ds])
    if not merged:
        merged = [[1, 1, 1]]
    if merged[-1][1] != 1 and merged[-1][2] != 1:
        merged.append([1, 1, 1])
    while len(merged) < 3:
        merged.insert(0, [1, 0, 0])
    outer, inner = merged[:-2], merged[-2:]
    inner_elems = inner[0][0] * inner[1][0]
    half = lw.arch.input_buffer_bytes // 2
    if inner_elems > half or max(inner[0][0], inner[1][0]) > 0xFFFF:
        raise EmberError(f"{b.node}: a layout change with {inner_elems}-element rows does not fit; {HOST_HINT}")
    step = max(1, min(half // inner_elems, 0xFFFF))
    *loops, last = outer
    t = 0
    for index in np.ndindex(*[d[0] for d in loops]):
        base_s = src_offset + sum(i * d[1] for i, d in zip(index, loops))
        base_d = dst_offset + sum(i * d[2] for i, d in zip(index, loops))
        for i0, i1 in _tiles(last[0], step):
            sizes = (i1 - i0, inner[0][0], inner[1][0])
            addr = (t % 2) * half
            b.load(Buffer.INP, addr, src, base_s + i0 * last[1], sizes, (last[1], inner[0][1], inner[1][1]))
            b.store(addr, dst, base_d + i0 * last[2], sizes, (last[2], inner[0][2], inner[1][2]))
            t += 1


def _permuted_copy(lw: _Lowering, op: Operation, src_strides: list[int], src_offset: int) -> None:
    """Write the result of a layout op whose output element at logical index i reads the
    input at `src_offset + sum(i[k] * src_strides[k])`."""
    out_shape = _shape(op.results[0])
    x = lw.view(op.operands[0])
    y = lw.define(op.results[0])
    dst_strides = physical_strides(out_shape)
    dims = [(out_shape[k], src_strides[k], dst_strides[k]) for k in _physical_order(len(out_shape))]
    _affine_copy(lw, dims, x.region, src_offset, y.region, 0)


def lower_transpose(lw: _Lowering, op: quant.TransposeOp) -> None:
    in_strides = physical_strides(_shape(op.input))
    perm = array_values(op.perm)
    _permuted_copy(lw, op, [in_strides[p] for p in perm], 0)


def lower_slice(lw: _Lowering, op: quant.SliceOp) -> None:
    in_strides = physical_strides(_shape(op.input))
    starts, steps = array_values(op.starts), array_values(op.steps)
    _permuted_copy(
        lw, op, [int(s * st) for s, st in zip(in_strides, steps)], int(sum(s * b for s, b in zip(in_strides, starts)))
    )


def lower_reshape(lw: _Lowering, op: quant.ReshapeOp) -> None:
    """Free when the NHWC bytes keep their order (the result aliases the input); else two
    strided copies through a row-major (NCHW order) scratch tensor."""
    in_shape, out_shape = _shape(op.input), _shape(op.output)
    x = lw.view(op.input)
    size = math.prod(in_shape)
    logical = np.arange(size).reshape(in_shape)
    in_order = logical.transpose(_physical_order(len(in_shape))).ravel()
    out_order = logical.reshape(out_shape).transpose(_physical_order(len(out_shape))).ravel()
    if np.array_equal(in_order, out_order) and op.output not in lw.outputs:
        rows, cols, chans = physical_dims(out_shape, lw.builder.node)
        lw.views[op.output] = TensorView(x.region, rows, cols, chans)
        return
    y = lw.define(op.output)
    flat = lw.builder.add_region(Region(f"{y.region}.rowmajor", "scratch", size, producer=lw.builder.node)).name
    in_strides = physical_strides(in_shape)
    c_order = [int(s) for s in np.cumprod((1, *in_shape[::-1]))[-2::-1]]
    _affine_copy(lw, [(d, in_strides[k], c_order[k]) for k, d in enumerate(in_shape)], x.region, 0, flat, 0)
    out_c = [int(s) for s in np.cumprod((1, *out_shape[::-1]))[-2::-1]]
    dst = physical_strides(out_shape)
    dims = [(out_shape[k], out_c[k], dst[k]) for k in _physical_order(len(out_shape))]
    _affine_copy(lw, dims, flat, 0, y.region, 0)


def lower_pad(lw: _Lowering, op: quant.PadOp) -> None:
    """Spatial zero-point padding of NCHW tensors: LOADs that pad on chip, then STOREs."""
    b = lw.builder
    in_shape = _shape(op.input)
    pads = [int(p) for p in array_values(op.pads)]
    rank = len(in_shape)
    if rank != 4 or pads[0] or pads[1] or pads[rank] or pads[rank + 1] or max(pads) > 255:
        raise EmberError(f"{b.node}: only H/W padding of at most 255 runs on the NPU; {HOST_HINT}")
    top, left, bottom, right = pads[2], pads[3], pads[6], pads[7]
    zp = quant_type_of(op.input).zero_point
    x = lw.view(op.input)
    y = lw.define(op.output)
    try:
        tile = plan_vector(lw.arch, Window(y.rows, y.cols, (1, 1)), x.channels)
    except TilingError as err:
        raise EmberError(f"{b.node}: cannot tile for {lw.arch.name}: {err}; {HOST_HINT}") from None
    if tile.cols < y.cols:
        raise EmberError(f"{b.node}: a padded row does not fit the input buffer; {HOST_HINT}")
    # every tile holds at least one real row: the first takes the top padding, the last the bottom
    bounds = [0] + [top + r for r in range(tile.rows, x.rows, tile.rows)] + [y.rows]
    if tile.rows <= top or tile.rows <= bottom:
        bounds = [0, y.rows] if y.rows * y.cols * x.channels * 2 <= lw.arch.input_buffer_bytes else None
        if bounds is None:
            raise EmberError(f"{b.node}: padding taller than a tile; {HOST_HINT}")
    for t, (r0, r1) in enumerate(zip(bounds[:-1], bounds[1:])):
        lo, hi = max(r0 - top, 0), min(r1 - top, x.rows)
        addr = (t % 2) * (lw.arch.input_buffer_bytes // 2)
        b.load_tile(addr, x, (lo, hi), (0, x.cols), (0, x.channels),
                    (top if r0 == 0 else 0, bottom if r1 == y.rows else 0, left, right), zp)  # fmt: skip
        b.store_tile(addr, y, (r0, r1), (0, y.cols), (0, y.channels))


# ----------------------------------------------------------------------- the pass


LOWERINGS: dict[type[Operation], Callable[[_Lowering, Operation], None]] = {
    quant.Conv2DOp: lower_conv2d,
    quant.ConvTransposeOp: lower_conv_transpose,
    quant.FullyConnectedOp: lower_fully_connected,
    quant.AddOp: lower_add,
    quant.MulOp: lower_mul,
    quant.ConcatOp: lower_concat,
    quant.MaxPoolOp: lower_max_pool,
    quant.AvgPoolOp: lower_avg_pool,
    quant.GlobalAvgPoolOp: lower_global_avg_pool,
    quant.ResizeOp: lower_resize,
    quant.LutOp: lower_lut,
    quant.ReshapeOp: lower_reshape,
    quant.TransposeOp: lower_transpose,
    quant.SliceOp: lower_slice,
    quant.PadOp: lower_pad,
}


def _arg_names(function: func.FuncOp) -> list[str]:
    names = []
    for i, arg in enumerate(function.args):
        entry = function.arg_attrs.data[i] if function.arg_attrs is not None else None
        name = entry.data.get(ARG_NAME) if isinstance(entry, DictionaryAttr) else None
        names.append(name.data if isinstance(name, StringAttr) else arg.name_hint or f"input{i}")
    return names


def _output_names(function: func.FuncOp, count: int) -> list[str]:
    names = function.attributes.get(OUTPUT_NAMES)
    if isinstance(names, ArrayAttr) and len(names.data) == count:
        return [n.data for n in names.data if isinstance(n, StringAttr)]
    ret = function.body.block.last_op
    assert ret is not None
    return [v.name_hint or f"output{i}" for i, v in enumerate(ret.operands)]


def lower_function(function: func.FuncOp, arch: Arch) -> ProgramBuilder:
    """Lower one function of quant ops; returns the filled builder. A float node left in
    it raises the capability table's error when the NPU cannot run it at all."""
    require_npu_support(function)
    lw = _Lowering(arch, ProgramBuilder(arch))
    block = function.body.block
    ret = block.last_op
    assert isinstance(ret, func.ReturnOp)
    for name, value in zip(_output_names(function, len(ret.operands)), ret.operands, strict=True):
        if isinstance(value.owner, quant.DequantizeOp):
            value = value.owner.input
        if not isinstance(value.type, TensorType) or not isinstance(value.type.element_type, quant.UniformQuantizedType):
            raise EmberError(f"{name}: the model output is computed in float; {HOST_HINT}")
        if value in lw.outputs or isinstance(value, SSAValue) and not isinstance(value.owner, Operation):
            raise EmberError(f"{name}: the output is a model input or another output; remove the pass-through output")
        lw.outputs[value] = (name, quant_type_of(value))
    for name, arg in zip(_arg_names(function), function.args, strict=True):
        element = arg.type.element_type if isinstance(arg.type, TensorType) else None
        quantized = isinstance(element, quant.UniformQuantizedType)
        if not quantized and not all(isinstance(use.operation, quant.QuantizeOp) for use in arg.uses):
            raise EmberError(f"{name}: the float input feeds ops other than quant.quantize; {HOST_HINT}")
        targets = [arg] if quantized else [use.operation.output for use in arg.uses]
        types = {quant_type_of(t) for t in targets}
        if len(types) > 1:
            raise EmberError(f"{name}: the input is quantized in {len(types)} different ways; quantize it once")
        for target in targets:
            shape = _shape(target)
            rows, cols, chans = physical_dims(shape, name)
            qtype = quant_type_of(target)
            elem_bytes = _elem_bytes(target)
            if name not in lw.builder.regions:
                lw.builder.add_region(Region(name, "input", rows * cols * chans * elem_bytes, _io_shape(shape), _layout(shape),
                                             "", qtype.scale, qtype.zero_point, extra=_dtype_extra(elem_bytes)))  # fmt: skip
            lw.views[target] = TensorView(name, rows, cols, chans, elem_bytes)
    for index, op in enumerate(block.ops):
        lw.op_index = index
        if isinstance(op, (func.ReturnOp, quant.ConstantOp, quant.QuantizeOp, quant.DequantizeOp)):
            if isinstance(op, quant.QuantizeOp) and op.output not in lw.views:
                raise EmberError(f"{lw.node_of(op)}: quant.quantize inside the model; {HOST_HINT}")
            if isinstance(op, quant.DequantizeOp) and any(
                not isinstance(use.operation, func.ReturnOp) for use in op.output.uses
            ):
                raise EmberError(f"{lw.node_of(op)}: float computation after quant.dequantize; {HOST_HINT}")
            continue
        lowering = LOWERINGS.get(type(op))
        lw.builder.node = lw.node_of(op)
        lw.builder.origin = op.name
        if lowering is None:
            raise EmberError(f"{lw.builder.node}: {op.name} has no NPU lowering; {HOST_HINT}")
        _check_int16(lw.builder.node, op)
        lowering(lw, op)
    return lw.builder


@dataclass(frozen=True)
class LowerQuantToNpuPass(ModulePass):
    """Lower the quant function of the module to an NPU program for `arch`."""

    name = "lower-quant-to-npu"

    arch: str = "ember16"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        function = main_function(op)
        lower_function(function, load_arch(self.arch)).finish(op, function)


def main_function(module: ModuleOp) -> func.FuncOp:
    """The function the NPU runs: the `main` part of a cropped module, else the only
    function, else the one named `main`."""
    functions = [f for f in module.ops if isinstance(f, func.FuncOp)]
    parts = [f for f in functions if isinstance(f.attributes.get(PART_ATTR), StringAttr)
             and f.attributes[PART_ATTR].data == "main"]  # fmt: skip
    if len(parts) == 1:
        return parts[0]
    if len(functions) != 1:
        functions = [f for f in functions if f.sym_name.data == "main"]
    if len(functions) != 1:
        raise EmberError("lower-quant-to-npu: expected one func.func (or one named 'main') of quant ops")
    return functions[0]
