"""A matrix product for the per-step recurrent products: C (M, N) (+)= A (M, K) @ W (K, N) with W packed once.

Why: a recurrent layer multiplies the same W_hh by a new (rows, H) state at every step. A BLAS ``gemm`` packs
both operands on every call; with a few dozen rows per thread that packing is a large part of the call. Here
W is packed once per sequence into column panels (``pack``), and each step runs a register-blocked
micro-kernel over them (``pgemm``; docs/performance.md).

Vectors sized to the host (``_kernels.host.variant()``, or ``RNNLAB_SIMD``): 512-bit vectors and a tile of
MR = 8 rows by NV = 2 vectors where AVX-512 gives 32 vector registers, 256-bit (AVX2) or 128-bit vectors and
6 rows by 2 vectors with 16 registers (``TILES``): the MR*NV accumulators, NV panel vectors and a broadcast
fit the register file. The variant reaches the compiled code as the type of a token argument (``token()``:
an empty int8, int16 or int32 array), so each variant is compiled, and cached, only where it is used, and a
cached kernel never serves another variant. Each variant runs (more slowly) on narrower hardware, where LLVM
splits its vectors, and they give bit-identical results: each entry of C is the same fused multiply-adds in
the same k order.

Layout. ``pack(W)`` gives P (ceil(N / NR), K, NR): panel p holds columns p*NR .. p*NR+NR-1 of W, zero padded,
row k of the panel contiguous. NR = NV vectors (float32: 32 columns with 512-bit vectors, 16 with 256-bit, 8
with 128-bit). The micro-kernel computes an (mr <= MR, NR) block of C: NV*mr vector accumulators stay in
registers for the whole k loop, and each k costs NV vector loads of the panel, mr broadcasts of A and NV*mr
fused multiply-adds; the k loop is kept from unrolling (``_no_unroll``). K is split in blocks of KC only
beyond 1024: a panel of the recurrent products (K = I + H + 1) streams from the second-level cache well
enough, and each block adds a pass over C and a short last block.

The micro-kernel is written in LLVM IR (``numba.extending.intrinsic``) because Numba gives no way to keep a
tile of vector accumulators in registers from Python code (LLVM's vectoriser does not combine a tile of
scalar accumulators into vectors). ``llvm.fmuladd`` fuses where the CPU has FMA and
falls back to a multiply and an add where it does not.

Length: the packing and the register-blocked product for every vector width, which Numba inlines into the
loops together.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import from_dtype, njit, types
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

from rnnlab.engine._kernels import cache_dir
from rnnlab.engine._kernels import host

cache_dir()     # a one-line error where Numba has nowhere to cache, and stale kernels dropped, before the first kernel

# (MR rows, NV vectors) of the register tile per variant: MR * NV accumulators, NV panel vectors and a
# broadcast in the register file (32 with AVX-512, 16 otherwise). On znver4 (docs/performance.md) 8 x 2 ran at
# 99-115 GFLOP/s on one core against 61-100 for 12 x 2; for 256 bits 4 x 3 beat 6 x 2 in the product alone, but
# not in the layers (a panel of 24 columns leaves a partial one at H = 128), so 6 x 2 stays
TILES = {"avx512": (8, 2), "avx2": (6, 2), "sse": (6, 2)}
MR_MAX = max(mr for mr, _ in TILES.values())     # the most rows of C per micro-kernel call (any variant)
KC = 1024                                       # K block (see pgemm)
_ITEM = {types.float32: 4, types.float64: 8}
_TOKEN = {"sse": np.int8, "avx2": np.int16, "avx512": np.int32}     # the variant as a type
_TOKEN_NAME = {from_dtype(np.dtype(d)): v for v, d in _TOKEN.items()}            # Numba's dtype -> the variant
_TOKEN_VB = {t: host.VARIANTS[v] // 8 for t, v in _TOKEN_NAME.items()}           # -> bytes per vector


def vector_bytes() -> int:
    """Bytes per vector of the variant in use: 64 (avx512), 32 (avx2) or 16 (sse)."""
    return host.VARIANTS[host.variant()] // 8


_TOKENS = {v: np.empty(0, d) for v, d in _TOKEN.items()}     # empty, so never written: one per variant


def token() -> np.ndarray:
    """The variant in use as the compiled kernels take it: an empty array whose dtype names it."""
    return _TOKENS[host.variant()]


def nr(dtype, variant=None) -> int:
    """Columns per packed panel: NV vectors of ``variant`` (default: the variant in use; ``TILES``)."""
    v = variant or host.variant()
    return TILES[v][1] * host.VARIANTS[v] // 8 // np.dtype(dtype).itemsize


_TILE_VARIANT = {np.dtype(d): v for v, d in _TOKEN.items()}     # a token's dtype -> its variant


def tile_for(dtype, tok) -> np.ndarray:
    """A scratch tile for ``pgemm``: MR_MAX rows of a panel's width (of ``tok``'s variant). One per thread."""
    return np.empty((MR_MAX, nr(dtype, _TILE_VARIANT[tok.dtype])), dtype)


def _vb(tok) -> int:
    if not isinstance(tok, types.Array) or tok.dtype not in _TOKEN_VB:
        raise TypingError(f"packed_gemm: expected a variant token (packed_gemm.token()), got {tok}")
    return _TOKEN_VB[tok.dtype]


def _variant_of(tok) -> str:
    _vb(tok)
    return _TOKEN_NAME[tok.dtype]


def _no_unroll(mod):
    """Loop metadata that keeps LLVM from unrolling the k loop: unrolled copies interleaved by the scheduler
    need more than the register file holds (a 12-row tile spilled its accumulators on znver4), and one
    iteration already has MR * NV independent multiply-adds."""
    s = mod.add_metadata([ir.MetaDataString(mod, "llvm.loop.unroll.disable")])
    loop_id = mod.add_metadata([s, s])
    loop_id.operands = (loop_id, s)                     # a loop ID refers to itself first (LLVM LangRef)
    return loop_id


def _make_ukr(MR, NV, strided=False):
    """The (MR, NV vectors) micro-kernel: C[:MR, :NV*VW] = (C if acc else 0) + A[:MR, :K] @ B[:K, :NV*VW].
    Arguments: K, the addresses of A, B and C, A's, B's and C's row strides in elements (B: a packed panel,
    ldb = NR, or any row-major matrix), acc, z, any value of the element type (it picks float32 or float64),
    and tok, the variant token (it picks the vector width: VW = bytes per vector / itemsize lanes).
    ``strided``: A's k stride is an argument after lda (lak) instead of 1, so A may be the transpose of a
    row-major matrix (lda = 1, lak = its row stride): the weight gradients' products Y^T X (``tgemm_acc``)."""
    def signature(K, a, lda, lak, bp, ldb, c, ldc, acc, z, tok):
        if z not in _ITEM:
            raise TypingError(f"packed_gemm: float32 or float64 expected, got {z}")
        args = (K, a, lda) + ((lak,) if strided else ()) + (bp, ldb, c, ldc, acc, z, tok)
        return types.void(*args), _vb(tok) // _ITEM[z]

    if strided:
        @intrinsic
        def ukr(typingctx, K, a, lda, lak, bp, ldb, c, ldc, acc, z, tok):
            sig, VW = signature(K, a, lda, lak, bp, ldb, c, ldc, acc, z, tok)
            return sig, _ukr_codegen(MR, NV, VW, z, True)
    else:
        @intrinsic
        def ukr(typingctx, K, a, lda, bp, ldb, c, ldc, acc, z, tok):
            sig, VW = signature(K, a, lda, None, bp, ldb, c, ldc, acc, z, tok)
            return sig, _ukr_codegen(MR, NV, VW, z, False)
    return ukr


def _ukr_codegen(MR, NV, VW, z, strided):
    """The LLVM IR of ``_make_ukr``'s kernel."""
    def codegen(context, builder, signature, args):
        if strided:
            K, a, lda, lak, bp, ldb, c, ldc, acc, _, _ = args
        else:
            K, a, lda, bp, ldb, c, ldc, acc, _, _ = args
        i64, i32 = ir.IntType(64), ir.IntType(32)
        ft = ir.FloatType() if z == types.float32 else ir.DoubleType()
        vt = ir.VectorType(ft, VW)
        al = 4 if z == types.float32 else 8                 # element alignment (rows need not be aligned)
        fp, vp = ft.as_pointer(), vt.as_pointer()

        def wide(v):
            return builder.sext(v, i64) if v.type.width < 64 else v
        K, lda, ldb, ldc = wide(K), wide(lda), wide(ldb), wide(ldc)
        lak = wide(lak) if strided else None
        a, bp, c = builder.inttoptr(a, fp), builder.inttoptr(bp, fp), builder.inttoptr(c, fp)
        accb = builder.icmp_unsigned("!=", acc, ir.Constant(acc.type, 0))
        zero = ir.Constant(vt, [0.0] * VW)
        crow = [builder.gep(c, [builder.mul(ir.Constant(i64, i), ldc)]) for i in range(MR)]
        arow = [builder.gep(a, [builder.mul(ir.Constant(i64, i), lda)]) for i in range(MR)]
        cvec = [builder.bitcast(builder.gep(crow[i], [ir.Constant(i64, v * VW)]), vp)
                for i in range(MR) for v in range(NV)]
        fn = builder.function
        start = builder.block
        ld = fn.append_basic_block("pgemm_load_c")
        entry = fn.append_basic_block("pgemm_init")
        builder.cbranch(accb, ld, entry)                # C is read only when added to (acc): a load then
        builder.position_at_end(ld)                     # discarded by a select still costs its cache miss
        loaded = [builder.load(p, align=al) for p in cvec]
        builder.branch(entry)
        builder.position_at_end(entry)
        init = []
        for x in loaded:
            ph = builder.phi(vt)
            ph.add_incoming(x, ld)
            ph.add_incoming(zero, start)
            init.append(ph)
        loop = fn.append_basic_block("pgemm_loop")
        done = fn.append_basic_block("pgemm_done")
        builder.cbranch(builder.icmp_signed(">", K, ir.Constant(i64, 0)), loop, done)

        builder.position_at_end(loop)
        k = builder.phi(i64)
        k.add_incoming(ir.Constant(i64, 0), entry)
        phis = []
        for x in init:
            ph = builder.phi(vt)
            ph.add_incoming(x, entry)
            phis.append(ph)
        boff = builder.mul(k, ldb)
        bv = [builder.load(builder.bitcast(builder.gep(bp, [builder.add(boff, ir.Constant(i64, v * VW))]), vp),
                           align=al) for v in range(NV)]
        mod = builder.module
        name = f"llvm.fmuladd.v{VW}{'f32' if z == types.float32 else 'f64'}"
        fma = mod.globals.get(name) or ir.Function(mod, ir.FunctionType(vt, [vt, vt, vt]), name)
        undef = ir.Constant(vt, ir.Undefined)
        splat = ir.Constant(ir.VectorType(i32, VW), [0] * VW)
        new = []
        for i in range(MR):
            s = builder.load(builder.gep(arow[i], [builder.mul(k, lak) if strided else k]), align=al)
            sv = builder.shuffle_vector(builder.insert_element(undef, s, ir.Constant(i32, 0)), undef, splat)
            for v in range(NV):
                new.append(builder.call(fma, [sv, bv[v], phis[i * NV + v]]))
        k1 = builder.add(k, ir.Constant(i64, 1))
        k.add_incoming(k1, loop)
        for ph, x in zip(phis, new):
            ph.add_incoming(x, loop)
        back = builder.cbranch(builder.icmp_signed("<", k1, K), loop, done)
        back.set_metadata("llvm.loop", _no_unroll(mod))

        builder.position_at_end(done)
        outs = []
        for x0, x1 in zip(init, new):                   # all phi nodes first, then the stores
            ph = builder.phi(vt)
            ph.add_incoming(x0, entry)
            ph.add_incoming(x1, loop)
            outs.append(ph)
        for p, x in zip(cvec, outs):
            builder.store(x, p, align=al)
        return context.get_dummy_value()
    return codegen


_r8, _r4, _r2, _r1 = (_make_ukr(1, n) for n in (8, 4, 2, 1))     # one row, 8 .. 1 vectors wide


def _make_dots(NV):
    """The dot products of R = lanes / NV rows of W with v, NV vectors of accumulators per row (R * NV = the
    lanes: 16 vectors with AVX-512 float32): ``dots(K, w, ldw, v, c, z, tok)``: c[:R] += W[:R, :K] @ v[:K],
    the rows of W at a stride of ldw elements, each contiguous, K a multiple of NV vectors. Per k step one load
    of v's NV vectors and R * NV loads of W for R * NV multiply-adds; then the NV accumulators of a row are
    added, and a tree of shuffles and adds (each level halving the vectors, then the blocks of the last one)
    leaves the R dot products in R lanes, added to c with one load and one store."""
    @intrinsic
    def dots(typingctx, K, w, ldw, v, c, z, tok):
        if z not in _ITEM:
            raise TypingError(f"packed_gemm: float32 or float64 expected, got {z}")
        sig = types.void(K, w, ldw, v, c, z, tok)
        VW = _vb(tok) // _ITEM[z]
        R = VW // NV

        def codegen(context, builder, signature, args):
            K, w, ldw, v, c, _, _ = args
            i64, i32 = ir.IntType(64), ir.IntType(32)
            ft = ir.FloatType() if z == types.float32 else ir.DoubleType()
            vt, rt = ir.VectorType(ft, VW), ir.VectorType(ft, R)
            al = 4 if z == types.float32 else 8
            fp, vp = ft.as_pointer(), vt.as_pointer()

            def wide(x):
                return builder.sext(x, i64) if x.type.width < 64 else x
            K, ldw = wide(K), wide(ldw)
            w, v, c = builder.inttoptr(w, fp), builder.inttoptr(v, fp), builder.inttoptr(c, fp)
            wrow = [builder.gep(w, [builder.mul(ir.Constant(i64, i), ldw)]) for i in range(R)]
            zero = ir.Constant(vt, [0.0] * VW)
            fn = builder.function
            entry = builder.block
            loop = fn.append_basic_block("dots_loop")
            done = fn.append_basic_block("dots_done")
            builder.cbranch(builder.icmp_signed(">", K, ir.Constant(i64, 0)), loop, done)
            builder.position_at_end(loop)
            k = builder.phi(i64)
            k.add_incoming(ir.Constant(i64, 0), entry)
            phis = []
            for _ in range(R * NV):
                ph = builder.phi(vt)
                ph.add_incoming(zero, entry)
                phis.append(ph)
            mod = builder.module
            name = f"llvm.fmuladd.v{VW}{'f32' if z == types.float32 else 'f64'}"
            fma = mod.globals.get(name) or ir.Function(mod, ir.FunctionType(vt, [vt, vt, vt]), name)

            def at(p, e):
                return builder.bitcast(builder.gep(p, [builder.add(k, ir.Constant(i64, e))]), vp)
            vv = [builder.load(at(v, u * VW), align=al) for u in range(NV)]
            new = [builder.call(fma, [builder.load(at(wrow[i], u * VW), align=al), vv[u], phis[i * NV + u]])
                   for i in range(R) for u in range(NV)]
            k1 = builder.add(k, ir.Constant(i64, NV * VW))
            k.add_incoming(k1, loop)
            for ph, x in zip(phis, new):
                ph.add_incoming(x, loop)
            back = builder.cbranch(builder.icmp_signed("<", k1, K), loop, done)
            back.set_metadata("llvm.loop", _no_unroll(mod))
            builder.position_at_end(done)
            sums = []
            for x in new:
                ph = builder.phi(vt)
                ph.add_incoming(zero, entry)
                ph.add_incoming(x, loop)
                sums.append(ph)
            rowsum = []
            for i in range(R):                              # a row's NV accumulators added
                acc = sums[i * NV]
                for u in range(1, NV):
                    acc = builder.fadd(acc, sums[i * NV + u])
                rowsum.append(acc)
            # the tree: a vector of m blocks of width VW / m (block j: a partial sum of row rows[j]) and another:
            # the low halves of their blocks, interleaved, plus the high halves -> 2m blocks of half the width
            vecs = [(x, [i]) for i, x in enumerate(rowsum)]
            while len(vecs) > 1:
                nxt = []
                for (p, rp), (q, rq) in zip(vecs[0::2], vecs[1::2]):
                    wd = VW // len(rp)
                    lo, hi, rows = [], [], []
                    for j in range(len(rp)):
                        for off, rr in ((0, rp[j]), (VW, rq[j])):
                            lo += [off + j * wd + t for t in range(wd // 2)]
                            hi += [off + j * wd + wd // 2 + t for t in range(wd // 2)]
                            rows.append(rr)
                    a = builder.shuffle_vector(p, q, ir.Constant(ir.VectorType(i32, VW), lo))
                    b = builder.shuffle_vector(p, q, ir.Constant(ir.VectorType(i32, VW), hi))
                    nxt.append((builder.fadd(a, b), rows))
                vecs = nxt
            s, rows = vecs[0]
            wd = VW // len(rows)
            while wd > 1:                                   # R < lanes: fold the blocks of the one vector
                h = wd // 2
                lo = [j * wd + t for j in range(len(rows)) for t in range(h)]
                hi = [j * wd + h + t for j in range(len(rows)) for t in range(h)]
                pad = [0] * (VW - len(lo))
                a = builder.shuffle_vector(s, s, ir.Constant(ir.VectorType(i32, VW), lo + pad))
                b = builder.shuffle_vector(s, s, ir.Constant(ir.VectorType(i32, VW), hi + pad))
                s, wd = builder.fadd(a, b), h
            # lanes j * wd of the blocks now hold rows[j]: gathered in row order into R lanes
            s = builder.shuffle_vector(s, s, ir.Constant(ir.VectorType(i32, R), [rows.index(r) for r in range(R)]))
            cp = builder.bitcast(c, rt.as_pointer())
            builder.store(builder.fadd(builder.load(cp, align=al), s), cp, align=al)
            return context.get_dummy_value()
        return sig, codegen
    return dots


# 8 rows x 2 vectors (AVX-512 float32): 16 rows x 1 ran at a third of the speed on rows 4 KB apart (H = 1024:
# sixteen streams that all fall in the same sets of the first-level cache), 4 rows x 4 slower at H <= 256
DOTS_NV = 2
_dots = _make_dots(DOTS_NV)


@njit(cache=True, nogil=True, inline="always")
def dots_acc(out, ro, o0, W, w0, n, v, rv, tok):
    """out[ro, o0 + i] += W[w0 + i, :] @ v[rv, :] for i < n: the rows of W (K columns contiguous, any row
    stride) read where they are, e.g. the layer's own W_hh (G*H, H), no transposed copy. Blocks of as many rows
    as a vector has lanes (``_dots``), the last rows and the last K % lanes columns in scalar loops."""
    K = W.shape[1]
    isz = W.itemsize
    z = out[ro, 0]
    VW = _lanes(z, tok)
    R = VW // DOTS_NV                                       # rows per block
    ldw = W.strides[0] // isz
    km = K - K % (VW * DOTS_NV)
    a = v.ctypes.data + v.strides[0] * rv
    i = 0
    while i + R <= n:
        _dots(km, W.ctypes.data + isz * (w0 + i) * ldw, ldw, a, out.ctypes.data + out.strides[0] * ro + isz * (o0 + i),
              z, tok)
        i += R
    for ii in range(n):
        acc = out[ro, o0 + ii] * 0
        for k in range(km if ii < i else 0, K):
            acc += W[w0 + ii, k] * v[rv, k]
        out[ro, o0 + ii] += acc


# ------------------------------------------------------------------ the variant's choices, written into the caller
# Intrinsics rather than ``@overload(inline="always")``: Numba compiles an inlined overload as a function of its
# own before it inlines it (the micro-kernels' switches took 0.1-0.3 s each of a first training step)
def _wide(builder, v):
    return builder.sext(v, ir.IntType(64)) if v.type.width < 64 else v


def _constant(value):
    return lambda context, builder, sig, args: context.get_constant(types.intp, value)


@intrinsic
def _take(typingctx, m, tok):
    """Rows of C for the next micro-kernel call when m rows are left: MR (the variant's), then 4/2/1."""
    MR = TILES[_variant_of(tok)][0]

    def codegen(context, builder, sig, args):
        m = _wide(builder, args[0])
        out = ir.Constant(m.type, 1)
        for n in (2, 4, MR):                            # the largest n <= m wins
            out = builder.select(builder.icmp_signed(">=", m, ir.Constant(m.type, n)), ir.Constant(m.type, n), out)
        return out
    return types.intp(m, tok), codegen


@intrinsic
def _lanes(typingctx, z, tok):
    """Lanes per vector for elements like z under the token's variant."""
    if z not in _ITEM:
        raise TypingError(f"packed_gemm: float32 or float64 expected, got {z}")
    return types.intp(z, tok), _constant(_vb(tok) // _ITEM[z])


@intrinsic
def _nv(typingctx, tok):
    """Vectors per panel (NV) of the token's variant."""
    return types.intp(tok), _constant(TILES[_variant_of(tok)][1])


def _switch(builder, selector, cases, default):
    """Runs the codegen of the case whose value is ``selector`` (an i64), else ``default``; each one's code
    written into its own block."""
    fn = builder.function
    done = fn.append_basic_block("tile_done")
    other = fn.append_basic_block("tile_default")
    sw = builder.switch(selector, other)
    for value, emit in cases:
        block = fn.append_basic_block(f"tile_{value}")
        sw.add_case(ir.Constant(selector.type, value), block)
        builder.position_at_end(block)
        emit()
        builder.branch(done)
    builder.position_at_end(other)
    default()
    builder.branch(done)
    builder.position_at_end(done)


@intrinsic
def _rows(typingctx, mr, kc, a, lda, bp, ldb, c, ldc, acc, z, tok):
    """The micro-kernel of mr rows (a value of ``_take``) of the token's variant: only its kernels compile."""
    if z not in _ITEM:
        raise TypingError(f"packed_gemm: float32 or float64 expected, got {z}")
    MR, NV = TILES[_variant_of(tok)]
    VW = _vb(tok) // _ITEM[z]
    kern = {m: _ukr_codegen(m, NV, VW, z, False) for m in (MR, 4, 2, 1)}

    def codegen(context, builder, sig, args):
        rest = args[1:]
        emit = {m: (lambda k=k: k(context, builder, None, rest)) for m, k in kern.items()}
        _switch(builder, _wide(builder, args[0]), [(m, emit[m]) for m in (MR, 4, 2)], emit[1])
        return context.get_dummy_value()
    return types.void(mr, kc, a, lda, bp, ldb, c, ldc, acc, z, tok), codegen


@intrinsic
def _trows(typingctx, mr, nv, kc, a, lak, b, ldb, c, ldc, z, tok):
    """The strided micro-kernel of mr rows (a value of ``_take``) and nv vectors (2, or 1), accumulating."""
    if z not in _ITEM:
        raise TypingError(f"packed_gemm: float32 or float64 expected, got {z}")
    MR = TILES[_variant_of(tok)][0]
    VW = _vb(tok) // _ITEM[z]
    kern = {(m, n): _ukr_codegen(m, n, VW, z, True) for m in (MR, 4, 2, 1) for n in (2, 1)}

    def codegen(context, builder, sig, args):
        mr, nv, kc, a, lak, b, ldb, c, ldc, zv, tk = args
        one = ir.Constant(ir.IntType(64), 1)
        rest = (kc, a, one, lak, b, ldb, c, ldc, one, zv, tk)          # A's row stride 1, k stride lak; acc
        emit = {key: (lambda k=k: k(context, builder, None, rest)) for key, k in kern.items()}
        sel = builder.add(builder.mul(_wide(builder, mr), ir.Constant(ir.IntType(64), 4)), _wide(builder, nv))
        _switch(builder, sel, [(4 * m + n, emit[m, n]) for m, n in kern if (m, n) != (1, 1)], emit[1, 1])
        return context.get_dummy_value()
    return types.void(mr, nv, kc, a, lak, b, ldb, c, ldc, z, tok), codegen


@intrinsic
def _not_fortran(typingctx, M):
    """Nothing at run time; at typing, refuses a matrix in Fortran order (its columns contiguous, not its
    rows): the one-row products read a row's columns as vectors."""
    if not (isinstance(M, types.Array) and M.ndim == 2 and M.layout != "F"):
        raise TypingError(f"vecmat_acc: expected a 2-D matrix with rows contiguous, got {M}")
    return types.none(M), lambda context, builder, sig, args: context.get_dummy_value()


@njit(cache=True, nogil=True, inline="always")
def vecmat_acc(out, ro, v, rv, M, tok):
    """out[ro, :] += v[rv, :] @ M for one row, M (K, N) unpacked with rows contiguous (and the rows of out and
    v contiguous), vectors of the token's variant: blocks of 8, 4, 2 and 1 vectors of columns with their
    accumulators in registers for the whole k loop, then a scalar loop over the last columns (faster than
    rank-1 updates of out[ro] in memory)."""
    _not_fortran(M)
    K, N = M.shape
    isz = M.itemsize
    z = out[ro, 0]
    VW = _lanes(z, tok)                                     # lanes per vector
    ldm = M.strides[0] // isz
    a = v.ctypes.data + v.strides[0] * rv
    c = out.ctypes.data + out.strides[0] * ro
    m = M.ctypes.data
    j = 0
    if M.strides[1] == isz:         # (a view of layout 'A' may step over columns: all in the scalar loop below)
        while j + 8 * VW <= N:
            _r8(K, a, 0, m + isz * j, ldm, c + isz * j, 0, 1, z, tok)
            j += 8 * VW
        if j + 4 * VW <= N:
            _r4(K, a, 0, m + isz * j, ldm, c + isz * j, 0, 1, z, tok)
            j += 4 * VW
        if j + 2 * VW <= N:
            _r2(K, a, 0, m + isz * j, ldm, c + isz * j, 0, 1, z, tok)
            j += 2 * VW
        if j + VW <= N:
            _r1(K, a, 0, m + isz * j, ldm, c + isz * j, 0, 1, z, tok)
            j += VW
    for jj in range(j, N):
        acc = out[ro, jj]
        for k in range(K):
            acc += v[rv, k] * M[k, jj]
        out[ro, jj] = acc


@njit(cache=True, nogil=True)
def pack_into(P, k0, w, K, N, sk, sn):
    """P[:, k0:k0+K] = the column panels of W (K, N), zero padded; W given by its memory w (1-D) and its element
    strides (sk, sn), so that one compiled function serves every memory layout (a transposed view, a row, a
    block of columns: as arrays each layout compiled a function of its own, 0.3 s each). The loops follow W's
    memory order (a column strip of a row-major W read row by row touches a new page per row; blocks of 16 rows
    do not)."""
    NP, NR = P.shape[0], P.shape[2]
    if sk < sn:                                             # columns contiguous (a transposed view)
        for p in range(NP):
            for j in range(NR):
                col = p * NR + j
                if col < N:
                    for k in range(K):
                        P[p, k0 + k, j] = w[k * sk + col * sn]
                else:
                    for k in range(K):
                        P[p, k0 + k, j] = 0.0
        return
    for kb in range(0, K, 16):                              # rows contiguous: blocks of 16 rows
        ke = min(K, kb + 16)
        for p in range(NP):
            j0 = p * NR
            j1 = min(NR, N - j0)
            for k in range(kb, ke):
                for j in range(j1):
                    P[p, k0 + k, j] = w[k * sk + (j0 + j) * sn]
                for j in range(j1, NR):
                    P[p, k0 + k, j] = 0.0


def _memory(W):
    """(w, sk, sn): W's memory as a 1-D array (no copy where W is C or F contiguous, else a copy) and its element
    strides."""
    if not (W.flags.c_contiguous or W.flags.f_contiguous):
        W = np.ascontiguousarray(W)
    isz = W.itemsize
    return W.ravel(order="K"), W.strides[0] // isz, W.strides[1] // isz


def _pack1(W, NR):
    """pack(W) of one 2-D block, without pack's checks (a layer's per-call overhead)."""
    K, N = W.shape
    P = np.empty(((N + NR - 1) // NR, K, NR), W.dtype)
    w, sk, sn = _memory(W)
    pack_into(P, 0, w, K, N, sk, sn)
    return P


def pack(*blocks):
    """The column panels P (ceil(N / NR), K, NR), for ``pgemm``, of W (K, N), or of the blocks (K_i, N)
    stacked along K (``np.concatenate(blocks)`` without the copy), any memory layout."""
    if len(blocks) == 1 and blocks[0].ndim == 2:
        return _pack1(blocks[0], nr(blocks[0].dtype))
    N = blocks[0].shape[1]
    if any(w.ndim != 2 or w.shape[1] != N for w in blocks):
        raise ValueError(f"pack: expected 2-D blocks with {N} columns, got shapes {[w.shape for w in blocks]}")
    n = nr(blocks[0].dtype)
    P = np.empty(((N + n - 1) // n, sum(w.shape[0] for w in blocks), n), blocks[0].dtype)
    k0 = 0
    for W in blocks:
        w, sk, sn = _memory(W)
        pack_into(P, k0, w, W.shape[0], N, sk, sn)
        k0 += W.shape[0]
    return P


@njit(cache=True, nogil=True)
def pgemm(C, A, P, N, acc, tile, tok):
    """C (M, N) = A (M, K) @ W (K, N) (+ C if acc), W given as its panels P = pack(W) under the variant of
    ``tok`` (``token()``). A and C: rows contiguous, any row stride. tile: (MR_MAX, NR) scratch of the same
    dtype (for the last, partial panel)."""
    M, K = A.shape
    NP, NR = P.shape[0], P.shape[2]
    isz = A.itemsize
    lda = A.strides[0] // isz
    ldc = C.strides[0] // isz
    a0, c0, p0, t0 = A.ctypes.data, C.ctypes.data, P.ctypes.data, tile.ctypes.data
    z = tile[0, 0]
    if NR != _nv(tok) * _lanes(z, tok):
        raise ValueError("pgemm: the panels were packed for another vector variant than the token's")
    if K == 0 and not acc:
        C[:, :N] = 0.0
    for kb in range(0, K, KC):
        kc = min(KC, K - kb)
        ac = 1 if (acc or kb > 0) else 0
        for p in range(NP):
            bp = p0 + isz * (p * K * NR + kb * NR)
            nv = min(NR, N - p * NR)                        # valid columns of this panel
            i = 0
            while i < M:
                mr = _take(M - i, tok)
                a = a0 + isz * (i * lda + kb)
                c, ld = c0 + isz * (i * ldc + p * NR), ldc
                if nv < NR:                                 # partial panel: through the tile
                    c, ld = t0 + 0, NR                      # (+ 0: an int64 as c; with a uint64 address c
                    # would be typed a float)
                    if ac:
                        for r in range(mr):
                            for j in range(nv):
                                tile[r, j] = C[i + r, p * NR + j]
                _rows(mr, kc, a, lda, bp, NR, c, ld, ac, z, tok)    # one call site: the micro-kernels
                if nv < NR:                                         # written once into pgemm
                    for r in range(mr):
                        for j in range(nv):
                            C[i + r, p * NR + j] = tile[r, j]
                i += mr


@njit(cache=True, nogil=True)
def tgemm_acc(C, Y, X, tok):
    """C (M, N) += Y^T @ X for Y (K, M) and X (K, N), both with rows contiguous (any row stride), neither
    copied nor packed: the weight gradients' products (dL/dA of a block of rows, transposed, times those rows'
    inputs), where K, the rows, is a few dozen per call. The tile's MR rows of C are MR consecutive entries of
    a row of Y (read with Y's row stride as the k step), its NV vectors a strip of X's rows; for each strip of
    columns the tiles of C run down the rows, so the strip is read from the first-level cache."""
    K, M = Y.shape
    N = X.shape[1]
    if K == 0 or M == 0 or N == 0:
        return
    isz = Y.itemsize
    lak, ldb, ldc = Y.strides[0] // isz, X.strides[0] // isz, C.strides[0] // isz
    y0, x0, c0 = Y.ctypes.data, X.ctypes.data, C.ctypes.data
    z = C[0, 0]
    VW = _lanes(z, tok)
    j = 0
    while j + VW <= N:
        nv = 2 if j + 2 * VW <= N else 1
        i = 0
        while i < M:
            mr = _take(M - i, tok)
            _trows(mr, nv, K, y0 + isz * i, lak, x0 + isz * j, ldb, c0 + isz * (i * ldc + j), ldc, z, tok)
            i += mr
        j += nv * VW
    for jj in range(j, N):                                  # the last columns, fewer than a vector
        for i in range(M):
            acc = C[i, jj]
            for k in range(K):
                acc += Y[k, i] * X[k, jj]
            C[i, jj] = acc
