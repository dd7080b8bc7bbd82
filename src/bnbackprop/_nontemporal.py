"""Non-temporal stores for numba kernels: an array written to memory without first being read into the cache.

An ordinary store to a line that is not in the cache reads the line first (read for ownership), so
writing dx out of cache costs two transfers per line. A non-temporal store writes the line alone.
numba has no way to ask for one, and LLVM's loop vectorizer will not vectorize a scalar store that
carries the `!nontemporal` hint, so the vector loops of `fast`'s second pass are written here in LLVM
IR itself: `stream_apply_1row`/`_2rows` for (N, D), with per-column coefficients, and
`stream_apply_row` for an NCHW row of H*W values, with one coefficient each. `stream_fence` orders
the stores before the stores that follow.

Only for arrays larger than the last-level cache: a non-temporal store also evicts the line from the
cache, which costs a reader who comes back for dx while it would still have been cached.

numba's cache (cache=True in `fast`) is keyed to fast.py alone: after editing this module or
`_prefetch`, delete the cached kernels (`make clean`), or the old code keeps running.
"""

from __future__ import annotations

from ._extras import require

numba = require("numba", "fast", __name__)
from llvmlite import ir  # noqa: E402 - numba's own dependency, importable once numba is
from numba.core import cgutils, types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

from ._prefetch import _FLAGS, VECTOR_BYTES, c_arrays, load, pointer, prefetch, vectors  # noqa: E402


def _apply_and_stream(builder, dy, src, out, k, va, vb, vc, vshift, chk, vec):
    """out[k:k+lanes] = a*dy + b*(src - shift) + c by one non-temporal store; chk turns NaN if one is inf or NaN."""
    centred = builder.fsub(load(builder, src, k, vec), vshift, flags=_FLAGS)  # x - mu first, as in fast._col_apply
    o = builder.fadd(builder.fadd(builder.fmul(va, load(builder, dy, k, vec), flags=_FLAGS),
                                  builder.fmul(vb, centred, flags=_FLAGS), flags=_FLAGS), vc, flags=_FLAGS)
    store = builder.store(o, pointer(builder, out, k, vec), align=VECTOR_BYTES)  # out's rows: aligned by the caller
    store.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
    zero = ir.Constant(vec, [ir.Constant(vec.element, 0.0)] * vec.count)
    builder.store(builder.fadd(builder.load(chk), builder.fmul(o, zero)), chk)


def _check_sum(builder, chk, vec):
    """The lanes of chk added up: 0, or NaN if some dx was inf or NaN."""
    total = builder.load(chk)
    out = builder.extract_element(total, ir.Constant(ir.IntType(32), 0))
    for lane in range(1, vec.count):
        out = builder.fadd(out, builder.extract_element(total, ir.Constant(ir.IntType(32), lane)))
    return out


def _zeros(builder, vec):
    """A stack slot holding a vector of zeros (chk)."""
    return cgutils.alloca_once_value(builder, ir.Constant(vec, [ir.Constant(vec.element, 0.0)] * vec.count))


def _make_stream_apply(nrows: int):
    """The intrinsic for `nrows` consecutive rows that share each load of the coefficients."""

    def codegen(context, builder, sig, args):
        lanes, vec = vectors(context, sig)
        dy, src, shift, a, b, c, out = (context.make_array(t)(context, builder, v) for t, v in zip(sig.args[:7], args[:7]))
        base, i, j0, nvec, ahead = args[7:]
        width = cgutils.unpack_tuple(builder, dy.shape)[1]
        chk = _zeros(builder, vec)
        with cgutils.for_range(builder, nvec) as loop:
            j = builder.add(j0, builder.mul(loop.index, ir.Constant(j0.type, lanes)))
            va, vb, vc, vshift = (load(builder, arr, j, vec) for arr in (a, b, c, shift))
            bj = builder.add(base, j)
            for r in range(nrows):
                k = builder.add(builder.mul(builder.add(i, ir.Constant(i.type, r)), width), bj)
                _apply_and_stream(builder, dy, src, out, k, va, vb, vc, vshift, chk, vec)
                ahead_k = builder.add(builder.mul(builder.add(ahead, ir.Constant(i.type, r)), width), bj)
                prefetch(builder, dy, ahead_k)
                prefetch(builder, src, ahead_k)
        return _check_sum(builder, chk, vec)

    @intrinsic
    def stream_apply(typingctx, dy, src, shift, a, b, c, out, base, i, j0, nvec, ahead):
        """dx = a*dy + b*(src - shift) + c on rows i..i+nrows-1, columns j0 .. j0 + nvec*lanes - 1 of the rows of
        dy.shape[1] values that start `base` elements into the arrays' data (base 0: the arrays' own rows;
        the coefficients are indexed by column), written to out with non-temporal vector stores (column j0 of
        each of those rows of out must be VECTOR_BYTES-aligned: for two rows, dy.shape[1] values must fill whole
        vectors), while the same columns of rows ahead..ahead+nrows-1 of dy and src are prefetched; returns 0
        unless some dx is inf/NaN."""
        dtype = getattr(dy, "dtype", None)
        if (dtype not in (types.float32, types.float64) or not c_arrays(dtype, (2, 2, 1, 1, 1, 1, 2), dy, src, shift, a, b, c, out)
                or not all(isinstance(n, types.Integer) for n in (base, i, j0, nvec, ahead))):
            return None
        return dtype(dy, src, shift, a, b, c, out, types.intp, types.intp, types.intp, types.intp, types.intp), codegen

    return stream_apply


def _splat(builder, value, vec):
    """A vector with `value` in every lane."""
    one = builder.insert_element(ir.Constant(vec, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), vec.count), [0] * vec.count))


def _stream_row_codegen(context, builder, sig, args):
    """The loop of `stream_apply_row`: the row's four coefficients splatted once, then one store per vector."""
    lanes, vec = vectors(context, sig)
    dy, src, out = (context.make_array(sig.args[n])(context, builder, args[n]) for n in (0, 1, 6))
    vshift, va, vb, vc = (_splat(builder, v, vec) for v in args[2:6])
    r, j0, nvec = args[7:]
    row = builder.mul(r, cgutils.unpack_tuple(builder, dy.shape)[1])
    chk = _zeros(builder, vec)
    with cgutils.for_range(builder, nvec) as loop:
        k = builder.add(row, builder.add(j0, builder.mul(loop.index, ir.Constant(j0.type, lanes))))
        _apply_and_stream(builder, dy, src, out, k, va, vb, vc, vshift, chk, vec)
    return _check_sum(builder, chk, vec)


@intrinsic
def stream_apply_row(typingctx, dy, src, h, a, b, c, out, r, j0, nvec):
    """dx = a*dy + b*(src - h) + c with one coefficient each for the whole of row r (an NCHW row of
    (N*C, H*W)), on columns j0 .. j0 + nvec*lanes - 1, written to out with non-temporal vector stores
    (out[r, j0] must be VECTOR_BYTES-aligned); returns 0 unless some dx is inf/NaN."""
    dtype = getattr(dy, "dtype", None)
    if (dtype not in (types.float32, types.float64) or not c_arrays(dtype, (2, 2, 2), dy, src, out)
            or any(t != dtype for t in (h, a, b, c)) or not all(isinstance(n, types.Integer) for n in (r, j0, nvec))):
        return None
    return dtype(dy, src, dtype, dtype, dtype, dtype, out, types.intp, types.intp, types.intp), _stream_row_codegen


stream_apply_1row = _make_stream_apply(1)
stream_apply_2rows = _make_stream_apply(2)


@intrinsic
def stream_fence(typingctx):
    """A store fence: the non-temporal stores before it are visible before any store after it (SFENCE on
    x86, where LLVM's `fence seq_cst` becomes a locked instruction that need not order them; a full
    fence elsewhere, e.g. DMB on AArch64)."""

    def codegen(context, builder, sig, args):
        if builder.module.triple.startswith(("x86_64", "i686", "i386")):
            sfence = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse.sfence")
            builder.call(sfence, [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(), codegen


__all__ = ["VECTOR_BYTES", "stream_apply_1row", "stream_apply_2rows", "stream_apply_row", "stream_fence"]
