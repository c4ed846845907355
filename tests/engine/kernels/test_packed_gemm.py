"""The packed per-step product (rnnlab.engine._kernels.packed_gemm) against NumPy's matmul, in every vector variant
(RNNLAB_SIMD: 512-, 256- and 128-bit vectors run on any x86 host, LLVM splitting what the CPU lacks), and the
variants' results bit for bit equal."""
import numpy as np
import pytest

from support import SIMD, needs_numba

pytestmark = needs_numba


@pytest.fixture(params=SIMD)
def variant(request, monkeypatch):
    monkeypatch.setenv("RNNLAB_SIMD", request.param)
    return request.param


@pytest.fixture(scope="module")
def compiled_callers():
    """Compiled callers of the inlined one-row products, made once: each vector width (the token's type) and
    dtype compiles its own specialisation, not each test."""
    from numba import njit
    from rnnlab.engine._kernels.packed_gemm import dots_acc, vecmat_acc

    @njit
    def vecmat(out, ro, v, rv, M, tok):
        vecmat_acc(out, ro, v, rv, M, tok)

    @njit
    def dots(out, ro, o0, W, w0, n, v, rv, tok):
        dots_acc(out, ro, o0, W, w0, n, v, rv, tok)
    return {"vecmat_acc": vecmat, "dots_acc": dots}


SHAPES = [(1, 1, 1), (7, 33, 50), (6, 16, 16), (13, 300, 17), (32, 256, 1024), (5, 600, 8), (11, 513, 40), (3, 0, 9),
          (7, 2100, 33), (2, 1025, 16)]                     # the last two: K in several blocks (KC)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_pgemm_equals_matmul(M, K, N, dtype, tol, variant):
    from rnnlab.engine._kernels.packed_gemm import MR_MAX, nr, pack, pgemm, token
    nv = {"avx512": 2, "avx2": 2, "sse": 2}[variant]                   # vectors per panel (TILES)
    assert nr(dtype) == nv * {"avx512": 64, "avx2": 32, "sse": 16}[variant] // np.dtype(dtype).itemsize
    rng = np.random.default_rng(M * 1000 + K + N)
    # A and C as row blocks of wider arrays: row strides differ from the row lengths, as in the scans
    A = rng.standard_normal((M, K + 5)).astype(dtype)[:, 2:2 + K]
    W = rng.standard_normal((K, N)).astype(dtype)
    big = rng.standard_normal((M, N + 7)).astype(dtype)
    C = big[:, 3:3 + N]
    C0, edge = C.copy(), big.copy()
    P = pack(W)
    assert P.shape == (-(-N // nr(dtype)), K, nr(dtype))
    tile = np.empty((MR_MAX, nr(dtype)), dtype)
    ref = A.astype(np.float64) @ W.astype(np.float64)
    scale = max(1.0, np.sqrt(K))
    pgemm(C, A, P, N, True, tile, token())              # accumulate
    np.testing.assert_allclose(C, C0 + ref, rtol=0, atol=tol * scale * 4)
    pgemm(C, A, P, N, False, tile, token())             # overwrite
    np.testing.assert_allclose(C, ref, rtol=0, atol=tol * scale * 4)
    # nothing outside C was written
    np.testing.assert_array_equal(big[:, :3], edge[:, :3])
    np.testing.assert_array_equal(big[:, 3 + N:], edge[:, 3 + N:])


# (K, M, N): rows of a step's block; a tile's rows (8, 6 and fewer, any variant); one or two vectors of columns
# and the last columns, fewer than a vector
TGEMM_SHAPES = [(1, 1, 1), (16, 512, 160), (5, 7, 3), (33, 13, 37), (4, 20, 64), (9, 96, 17), (2, 3, 48)]


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("K,M,N", TGEMM_SHAPES)
def test_tgemm_acc_equals_matmul(K, M, N, dtype, tol, variant):
    """C += Y^T X on views with row strides longer than their rows (as the loop's blocks of DX, x and h):
    every entry right, nothing outside C written."""
    from rnnlab.engine._kernels.packed_gemm import tgemm_acc, token
    rng = np.random.default_rng(K * 100 + M + N)
    Y = rng.standard_normal((K, M + 3)).astype(dtype)[:, 1:1 + M]
    X = rng.standard_normal((K, N + 6)).astype(dtype)[:, 4:4 + N]
    big = rng.standard_normal((M, N + 7)).astype(dtype)
    C = big[:, 3:3 + N]
    C0, edge = C.copy(), big.copy()
    tgemm_acc(C, Y, X, token())
    ref = C0.astype(np.float64) + Y.T.astype(np.float64) @ X.astype(np.float64)
    np.testing.assert_allclose(C, ref, rtol=0, atol=tol * max(1.0, np.sqrt(K)) * 4)
    np.testing.assert_array_equal(big[:, :3], edge[:, :3])
    np.testing.assert_array_equal(big[:, 3 + N:], edge[:, 3 + N:])


def test_pack_layout(monkeypatch):
    from rnnlab.engine._kernels.packed_gemm import pack
    monkeypatch.setenv("RNNLAB_SIMD", "avx2")
    W = np.arange(3 * 20, dtype=np.float32).reshape(3, 20)
    P = pack(W)                                         # (2 panels, K = 3, 16 columns: 2 vectors of 8)
    assert P.shape == (2, 3, 16)
    np.testing.assert_array_equal(P[0], W[:, :16])
    np.testing.assert_array_equal(P[1, :, :4], W[:, 16:])
    assert not P[1, :, 4:].any()                        # zero padding


def test_pgemm_rejects_other_dtypes():
    from numba.core.errors import TypingError
    from rnnlab.engine._kernels.packed_gemm import pgemm, token
    A = np.ones((2, 2), np.int64)
    with pytest.raises(TypingError, match="float32 or float64"):
        pgemm(A, A, np.ones((1, 2, 8), np.int64), 2, False, np.ones((6, 8), np.int64), token())


def test_pgemm_refuses_panels_of_another_variant(monkeypatch):
    from rnnlab.engine._kernels.packed_gemm import MR_MAX, pack, pgemm, token
    monkeypatch.setenv("RNNLAB_SIMD", "avx2")
    P = pack(np.ones((3, 20), np.float32))
    monkeypatch.setenv("RNNLAB_SIMD", "avx512")
    with pytest.raises(ValueError, match="packed for another vector variant"):
        pgemm(np.empty((2, 20), np.float32), np.ones((2, 3), np.float32), P, 20, False,
              np.empty((MR_MAX, 16), np.float32), token())


def test_the_k_loop_is_not_unrolled():
    """The micro-kernel's k loop carries llvm.loop.unroll.disable: unrolled copies of a tile spill (a 12-row
    tile's accumulators went to the stack on znver4, at 40 % of the speed)."""
    from numba import njit
    from rnnlab.engine._kernels.packed_gemm import _rows

    @njit                                               # not cached: a cached function cannot be inspected
    def one_tile(A, P, C, tok):                         # 8 rows, 2 vectors: AVX-512's full tile
        _rows(8, A.shape[1], A.ctypes.data, A.shape[1], P.ctypes.data, P.shape[1], C.ctypes.data, C.shape[1], 0,
              A[0, 0], tok)
    A, C = np.ones((8, 5), np.float32), np.zeros((8, 32), np.float32)
    one_tile(A, np.ones((5, 32), np.float32), C, np.empty(0, np.int32))
    assert (C == 5).all()
    ir = "".join(one_tile.inspect_llvm().values())
    assert '!"llvm.loop.unroll.disable"' in ir and "!llvm.loop" in ir


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K1,K2,N", [(3, 5, 20), (40, 17, 33), (1, 0, 1), (64, 200, 48)])
def test_pack_blocks_and_layouts(K1, K2, N, dtype, variant):
    """pack(W1, W2) == pack(np.concatenate((W1, W2))), for row-major blocks and for transposed views (each
    takes its own loop order)."""
    from rnnlab.engine._kernels.packed_gemm import nr, pack
    rng = np.random.default_rng(K1 + K2 + N)
    W1, W2 = rng.standard_normal((K1, N)).astype(dtype), rng.standard_normal((K2, N)).astype(dtype)
    n = nr(dtype)
    expect = np.zeros((K1 + K2, -(-N // n) * n), dtype)
    expect[:, :N] = np.concatenate((W1, W2))
    expect = expect.reshape(K1 + K2, -1, n).transpose(1, 0, 2)
    np.testing.assert_array_equal(pack(W1, W2), expect)
    np.testing.assert_array_equal(pack(np.ascontiguousarray(W1.T).T, np.ascontiguousarray(W2.T).T), expect)


def test_pack_compiles_once_per_dtype_for_every_layout():
    """Row-major, transposed, a column block, a strided view, a row broadcast from a vector: the same panels as
    the blocks copied, and one compiled packing function for all of them (each layout compiled its own)."""
    from rnnlab.engine._kernels.packed_gemm import nr, pack, pack_into
    rng = np.random.default_rng(7)
    W = rng.standard_normal((9, 40)).astype(np.float32)
    b = rng.standard_normal(13).astype(np.float32)
    blocks = (np.ascontiguousarray(W[:4, :13]), np.asfortranarray(W[:5, 20:33]), W[::2, 1:14], b[None, :],
              W.T[3:16].T, W[:3, ::3][:, :13])
    n = nr(np.float32)
    want = np.zeros((sum(w.shape[0] for w in blocks), -(-13 // n) * n), np.float32)
    want[:, :13] = np.concatenate([np.array(w) for w in blocks])
    np.testing.assert_array_equal(pack(*blocks), want.reshape(len(want), -1, n).transpose(1, 0, 2))
    for w in blocks:
        pack(w)
    assert len([s for s in pack_into.signatures if str(s[2].dtype) == "float32"]) == 1


def test_pack_rejects_mismatched_blocks():
    from rnnlab.engine._kernels.packed_gemm import pack
    with pytest.raises(ValueError, match="20 columns"):
        pack(np.ones((3, 20), np.float32), np.ones((3, 21), np.float32))


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("K,N", [(32, 128), (1, 1), (7, 3), (33, 64 + 32 + 16 + 8 + 5), (5, 200), (64, 256)])
def test_vecmat_acc_equals_matmul(K, N, dtype, tol, variant, compiled_callers):
    """The one-row product out[ro] += v[rv] @ M: every block width (8, 4, 2, 1 vectors, scalar tail), rows
    picked out of wider arrays, M a row block of a wider matrix; nothing else written."""
    from rnnlab.engine._kernels.packed_gemm import token
    tok = token()
    run = compiled_callers["vecmat_acc"]
    rng = np.random.default_rng(K * 100 + N)
    v = rng.standard_normal((3, K)).astype(dtype)
    Mbig = rng.standard_normal((K, N + 9)).astype(dtype)
    M = Mbig[:, :N]                                     # rows contiguous, row stride N + 9
    out = rng.standard_normal((4, N)).astype(dtype)
    before = out.copy()
    run(out, 2, v, 1, M, tok)
    ref = before[2].astype(np.float64) + v[1].astype(np.float64) @ M.astype(np.float64)
    np.testing.assert_allclose(out[2], ref, rtol=0, atol=tol * max(1.0, np.sqrt(K)) * 4)
    np.testing.assert_array_equal(np.delete(out, 2, axis=0), np.delete(before, 2, axis=0))


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("K,n", [(64, 32), (1, 1), (7, 3), (33, 17), (100, 37), (256, 16), (1024, 9)])
def test_dots_acc_equals_matmul(K, n, dtype, tol, variant, compiled_callers):
    """out[ro, o0 + i] += W[w0 + i] @ v[rv] for i < n: whole blocks of rows (``_dots``), the last rows and the last
    columns (K not a multiple of the block's columns) in scalar loops; W a row block of a wider matrix (row
    stride K + 5); nothing else written."""
    from rnnlab.engine._kernels.packed_gemm import token
    tok = token()
    run = compiled_callers["dots_acc"]
    rng = np.random.default_rng(K * 100 + n)
    v = rng.standard_normal((3, K)).astype(dtype)
    W = rng.standard_normal((n + 6, K + 5)).astype(dtype)[:, :K]
    out = rng.standard_normal((4, n + 7)).astype(dtype)
    before = out.copy()
    run(out, 2, 4, W, 3, n, v, 1, tok)
    ref = before[2, 4:4 + n].astype(np.float64) + W[3:3 + n].astype(np.float64) @ v[1].astype(np.float64)
    np.testing.assert_allclose(out[2, 4:4 + n], ref, rtol=0, atol=tol * max(1.0, np.sqrt(K)) * 4)
    rest = np.ones(out.shape, bool)
    rest[2, 4:4 + n] = False
    np.testing.assert_array_equal(out[rest], before[rest])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_variant_gives_the_same_bits(dtype, monkeypatch):
    """Each entry of C is the same fused multiply-adds in the same k order in every variant: the products agree
    bit for bit (rows 1 .. 30 cover every micro-kernel height of every variant)."""
    from rnnlab.engine._kernels.packed_gemm import MR_MAX, nr, pack, pgemm, token
    rng = np.random.default_rng(0)
    # A and C row blocks of wider arrays, as test_pgemm_equals_matmul and the loops pass them (the pgemm they
    # compile, none of its own)
    A, W = rng.standard_normal((30, 78)).astype(dtype)[:, :77], rng.standard_normal((77, 45)).astype(dtype)
    out = {}
    for v in SIMD:
        monkeypatch.setenv("RNNLAB_SIMD", v)
        C = np.empty((30, 46), dtype)[:, :45]
        pgemm(C, A, pack(W), 45, False, np.empty((MR_MAX, nr(dtype)), dtype), token())
        out[v] = C
    np.testing.assert_array_equal(out["avx512"], out["avx2"])
    np.testing.assert_array_equal(out["avx2"], out["sse"])


def test_the_variant_follows_the_host_and_the_override(monkeypatch):
    from rnnlab.engine._kernels import host
    monkeypatch.delenv("RNNLAB_SIMD", raising=False)
    assert host.variant() == host.host_variant() in host.VARIANTS
    monkeypatch.setenv("RNNLAB_SIMD", "sse")
    assert host.variant() == "sse"
    monkeypatch.setenv("RNNLAB_SIMD", "neon")
    with pytest.raises(ValueError, match=r"RNNLAB_SIMD: expected one of \['avx2', 'avx512', 'sse'\], got 'neon'"):
        host.variant()
    monkeypatch.setenv("RNNLAB_SIMD", "avx2")
    line = host.describe()
    assert "rnnlab vectors avx2 (256-bit)" in line and line.startswith("CPU ") and "BLAS " in line


def test_a_host_llvm_cannot_describe_gets_the_128_bit_variant(monkeypatch):
    from llvmlite import binding as llvm
    from rnnlab.engine._kernels import host

    def fail():
        raise RuntimeError("failed to get host cpu features")
    monkeypatch.setattr(llvm, "get_host_cpu_features", fail)
    monkeypatch.delenv("RNNLAB_SIMD", raising=False)
    host.host_variant.cache_clear()
    try:
        assert host.cpu_features() == set() and host.variant() == "sse"
    finally:
        host.host_variant.cache_clear()


def test_one_row_products_refuse_weights_without_contiguous_rows():
    """vecmat_acc reads a row's columns as vectors: a matrix in Fortran order is refused when the caller
    compiles, and a view that steps over columns (layout 'A', known only at run time) is summed column by
    column, not wrongly."""
    from numba import njit
    from numba.core.errors import TypingError
    from rnnlab.engine._kernels.packed_gemm import token, vecmat_acc

    @njit                                               # not cached: its failing signature must not be stored
    def one_row(out, v, M, tok):
        vecmat_acc(out, 0, v, 0, M, tok)
    M = np.arange(100, dtype=np.float32).reshape(5, 20)
    out, v = np.zeros((1, 20), np.float32), np.ones((1, 5), np.float32)
    one_row(out, v, M, token())
    np.testing.assert_allclose(out[0], M.sum(axis=0))
    out[:] = 0.0
    one_row(out[:, :10], v, M[:, ::2], token())         # every other column: layout 'A', column stride 2
    np.testing.assert_allclose(out[0, :10], M[:, ::2].sum(axis=0))
    with pytest.raises(TypingError, match="rows contiguous"):
        one_row(out, v, np.asfortranarray(M), token())
