"""Prefetched reads for numba kernels: the (N, D) first pass of `fast`, and a helper for its streamed second pass.

An (N, D) pass reads a few rows at a time, a few thousand bytes of each, then moves on to the next
rows. Out of cache the first pass ran at about the speed of np.add, which moves half as many bytes
again. Asking for the next rows' lines while the current ones are summed (a software prefetch into the
L2 cache, LLVM's `llvm.prefetch`) took 15-19 % off that pass at 16-32 MiB per array, in separate
timings on the benchmark machine (2-core AMD EPYC; benchmarks/README.md), and the streamed second
pass prefetches the same way. At 8 MiB it made no clear difference and at 4 MiB and below it cost
11-24 %, so `fast` prefetches in the first pass only from PREFETCH_MIN_BYTES (16 MiB), and in the
second only where it streams. numba cannot ask for a prefetch, and LLVM's loop vectorizer will not
vectorize a loop that calls one, so `sums_4rows` writes the vector loop in LLVM IR, as `_nontemporal`
does for the stores. A prefetch never faults and never changes a value; on a CPU without one, LLVM
drops it.

numba's cache (cache=True in `fast`) is keyed to fast.py alone: after editing this module or
`_nontemporal`, delete the cached kernels (`make clean`), or the old code keeps running.
"""

from __future__ import annotations

from ._extras import require

numba = require("numba", "fast", __name__)
from llvmlite import ir  # noqa: E402 - numba's own dependency, importable once numba is
from numba.core import cgutils, types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

# Bytes per vector: one cache line, and the widest SIMD register (AVX-512); LLVM splits the vectors
# into two or four registers on CPUs with narrower ones (AVX2, SSE2, NEON).
VECTOR_BYTES = 64
# Rows ahead of the ones being read whose lines are asked for: the next sweep of the first pass
# (4 rows), two rows of the streamed second pass. 4 and 8 rows ahead timed the same.
SUMS_AHEAD, APPLY_AHEAD = 4, 2
_FLAGS = ("reassoc", "contract", "nsz")  # as fast._FLAGS: lets LLVM fuse the multiply-adds
_L2 = 2  # llvm.prefetch's locality 2: into the L2 cache (locality 3, into L1 as well, was slower)


def vectors(context, sig):
    """The lanes per vector and the vector type of the arrays' dtype in `sig`."""
    elem = context.get_value_type(sig.args[0].dtype)
    lanes = VECTOR_BYTES // context.get_abi_sizeof(elem)
    return lanes, ir.VectorType(elem, lanes)


def pointer(builder, array, index, vec):
    """A vector pointer to array.data[index]."""
    return builder.bitcast(builder.gep(array.data, [index]), vec.as_pointer())


def load(builder, array, index, vec):
    """The vector at array.data[index], unaligned (rows start anywhere)."""
    return builder.load(pointer(builder, array, index, vec), align=1)


def prefetch(builder, array, index) -> None:
    """Ask for the cache line of array.data[index] to be read into the L2 cache."""
    i8p = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                        "llvm.prefetch.p0i8")
    # read (0), locality, data cache (1)
    builder.call(fn, [builder.bitcast(builder.gep(array.data, [index]), i8p), i32(0), i32(_L2), i32(1)])


def c_arrays(dtype, ndims, *arrays) -> bool:
    """True if every array type is C-contiguous, of `dtype`, with the given number of dimensions."""
    return all(isinstance(a, types.Array) and a.layout == "C" and a.dtype == dtype and a.ndim == n
               for a, n in zip(arrays, ndims))


def _sums_codegen(context, builder, sig, args):
    """The loop of `sums_4rows`: per vector of columns, four rows' loads, their sums, eight prefetches."""
    lanes, vec = vectors(context, sig)
    dy, src, shift, part_b, part_g = (context.make_array(t)(context, builder, v) for t, v in zip(sig.args[:5], args[:5]))
    i, nvec, ahead = args[5:]
    width = cgutils.unpack_tuple(builder, dy.shape)[1]

    def add(p, q):
        return builder.fadd(p, q, flags=_FLAGS)

    with cgutils.for_range(builder, nvec) as loop:
        j = builder.mul(loop.index, ir.Constant(i.type, lanes))
        vshift = load(builder, shift, j, vec)
        v, prod = [], []
        for r in range(4):
            k = builder.add(builder.mul(builder.add(i, ir.Constant(i.type, r)), width), j)
            v.append(load(builder, dy, k, vec))
            centred = builder.fsub(load(builder, src, k, vec), vshift, flags=_FLAGS)
            prod.append(builder.fmul(v[r], centred, flags=_FLAGS))
            ahead_k = builder.add(builder.mul(builder.add(ahead, ir.Constant(i.type, r)), width), j)
            prefetch(builder, dy, ahead_k)
            prefetch(builder, src, ahead_k)
        # the same expression as the numba loop of fast._col_sums (which sums the columns after the vectors)
        sum_b, sum_g = add(add(v[0], v[1]), add(v[2], v[3])), add(add(prod[0], prod[1]), add(prod[2], prod[3]))
        builder.store(add(load(builder, part_b, j, vec), sum_b), pointer(builder, part_b, j, vec), align=1)
        builder.store(add(load(builder, part_g, j, vec), sum_g), pointer(builder, part_g, j, vec), align=1)
    return context.get_dummy_value()


@intrinsic
def sums_4rows(typingctx, dy, src, shift, part_b, part_g, i, nvec, ahead):
    """Rows i..i+3, columns 0 .. nvec*lanes - 1 of (N, D): part_b += sum(dy) and part_g += sum(dy*(src - shift))
    per column, in the arrays' dtype, while rows ahead..ahead+3 are prefetched (ahead + 3 must be a row)."""
    dtype = getattr(dy, "dtype", None)
    if (dtype not in (types.float32, types.float64) or not c_arrays(dtype, (2, 2, 1, 1, 1), dy, src, shift, part_b, part_g)
            or not all(isinstance(n, types.Integer) for n in (i, nvec, ahead))):
        return None
    return types.none(dy, src, shift, part_b, part_g, types.intp, types.intp, types.intp), _sums_codegen


__all__ = ["APPLY_AHEAD", "SUMS_AHEAD", "VECTOR_BYTES", "c_arrays", "load", "pointer", "prefetch", "sums_4rows", "vectors"]
