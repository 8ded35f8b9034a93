"""jacfwd / jacrev through the symbolic identity basis (compiler/prims/basis.py): the basis is a
primitive, rewritten away where its consumer allows (a product with it is a slice, a scale is a
scaled basis, a sum over it is a slice of the scale) and evaluated lazily or materialised
otherwise. Oracles: closed forms and float64 central finite differences; kernels where the basis
meets matmul from either side, transposes, broadcasts, reductions and loops; chunked forms; the
reference interpreter and the MLIR backend; and IR-level checks that `jacfwd(predict)` keeps no
product with the basis (so the optimisation cannot silently regress)."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import ir
from compiler.ad import transpose as transpose_mod
from compiler.ad.jacobian import jacfwd_function
from compiler.ad.jvp import jvp_function
from compiler.ad.transpose import vjp_function
from compiler.builder import Builder
from compiler.pipeline import prepare
from dsl import compile_source, hessian, jacfwd, jacrev, kernel
from dsl import interpret

rng = np.random.default_rng(2024)


def rand(*shape, dtype=np.float64, lo=-1.5, hi=1.5):
    return rng.uniform(lo, hi, shape).astype(dtype)


def fd_jacobian(f, args, k, eps=1e-6):
    """float64 central-difference Jacobian of f's single output w.r.t. args[k]."""
    x = np.asarray(args[k], np.float64)
    cols = []
    for j in range(x.size):
        e = np.zeros(x.size)
        e[j] = eps
        e = e.reshape(x.shape)

        def at(h):
            a = list(args)
            a[k] = float(x + h) if x.ndim == 0 else x + h
            return np.asarray(f(*a), np.float64)
        cols.append((at(e) - at(-e)) / (2 * eps))
    stacked = np.stack(cols, axis=-1)
    return stacked.reshape(stacked.shape[:-1] + x.shape)


def close(a, b, tol=1e-6):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# ---- kernels ---------------------------------------------------------------------------------------
@kernel
def predict(W: f64[k], b: f64, inputs: f64[n, k]) -> f64[n]:
    return sigmoid(inputs @ W + b)


@kernel
def predict32(W: f32[k], b: f32, inputs: f32[n, k]) -> f32[n]:
    return sigmoid(inputs @ W + b)


@kernel
def mat_vec(A: f64[m, k], x: f64[k]) -> f64[m]:
    return tanh(A @ x)


@kernel
def vec_mat(x: f64[k], B: f64[k, m]) -> f64[m]:
    return sin(x @ B) * 2.0


@kernel
def mat_mat(X: f64[n, k], B: f64[k, m]) -> f64[n, m]:
    return tanh(X @ B)


@kernel
def transposed(X: f64[n, k], v: f64[n]) -> f64[k]:
    return X.T @ v + sum(X.T * X.T, axis=1)


@kernel
def bcast(x: f64[k], A: f64[n, k], c: f64) -> f64[n, k]:
    return A * x * c + exp(x) / (1.0 + c * c)


@kernel
def reduce_all(x: f64[n, k], y: f64[n, k]) -> f64:
    return sum(x * y) + sum(sin(x))


@kernel
def reduce_axis(x: f64[n, k]) -> f64[n]:
    return sum(x * x, axis=1)


@kernel
def scalar_in(b: f64, x: f64[n]) -> f64[n]:
    return sin(b * x) + b


@kernel
def neg_div(x: f64[k], y: f64[k]) -> f64[k]:
    return -x / y + (x - 2.0 * x) * y


@kernel
def widen(x: f32[k]) -> f64[k]:
    return f64(x) * 2.0 + f64(x * x)


@kernel
def carried(x: f64[n], a: f64, steps: i64) -> f64[n]:
    y = x
    for t in range(steps):
        y = y * a + sin(y)
    return y


@kernel
def elementwise_loop(x: f64[n]) -> f64:
    s = 0.0
    for i in range(n):
        s = s + x[i] * x[i] * (i + 1)
    return s


@kernel
def matrix_out(x: f64[k], A: f64[n, k]) -> f64[n, k]:
    return A * exp(x) - x


def _predict_jac(W, b, X):
    s = 1 / (1 + np.exp(-(X @ W + b)))
    return (s * (1 - s))[:, None] * X


# ---- predict: closed form, finite differences, f32 ----------------------------------------------------------
def test_predict_closed_form_f64():
    W, b, X = rand(7), 0.3, rand(11, 7)
    J = _predict_jac(W, b, X)
    close(jacfwd(predict)(W, b, X), J, 1e-12)
    close(jacrev(predict)(W, b, X), J, 1e-12)
    close(jacfwd(predict)(W, b, X), fd_jacobian(predict, (W, b, X), 0), 1e-7)


def test_predict_closed_form_f32_bench_size():
    W, b, X = rand(512, dtype=np.float32), np.float32(0.1), rand(256, 512, dtype=np.float32)
    J = _predict_jac(W.astype(np.float64), 0.1, X.astype(np.float64))
    for jf in (jacfwd(predict32), jacrev(predict32)):
        out = jf(W, b, X)
        assert out.dtype == np.float32 and out.shape == (256, 512)
        close(out, J, 1e-5)


def test_predict_other_arguments():
    W, b, X = rand(5), -0.2, rand(6, 5)
    s = 1 / (1 + np.exp(-(X @ W + b)))
    d = s * (1 - s)
    close(jacfwd(predict, argnums=1)(W, b, X), d, 1e-12)
    close(jacrev(predict, argnums=1)(W, b, X), d, 1e-12)
    full = np.einsum("i,ij,ik->ijk", d, np.eye(6), np.broadcast_to(W, (6, 5)))   # d s_i / d X_jk
    close(jacfwd(predict, argnums=2)(W, b, X), full, 1e-12)
    close(jacrev(predict, argnums=2)(W, b, X), full, 1e-12)
    jw, jx = jacfwd(predict, argnums=(0, 2))(W, b, X)
    close(jw, _predict_jac(W, b, X), 1e-12)
    close(jx, full, 1e-12)


# ---- the basis meeting other ops -----------------------------------------------------------------------------
CASES = [
    (mat_vec, lambda: (rand(4, 3), rand(3)), (0, 1)),
    (vec_mat, lambda: (rand(3), rand(3, 5)), (0, 1)),
    (mat_mat, lambda: (rand(4, 3), rand(3, 2)), (0, 1)),
    (transposed, lambda: (rand(4, 3), rand(4)), (0, 1)),
    (bcast, lambda: (rand(3), rand(2, 3), 0.7), (0, 1, 2)),
    (reduce_all, lambda: (rand(3, 4), rand(3, 4)), (0, 1)),
    (reduce_axis, lambda: (rand(3, 4),), (0,)),
    (scalar_in, lambda: (0.4, rand(5)), (0, 1)),
    (neg_div, lambda: (rand(4), rand(4, lo=0.5, hi=2.0)), (0, 1)),
    (carried, lambda: (rand(3), 0.6, 4), (0, 1)),
    (elementwise_loop, lambda: (rand(5),), (0,)),
    (matrix_out, lambda: (rand(3), rand(2, 3)), (0, 1)),
]


@pytest.mark.parametrize("f,make,argnums", CASES, ids=[c[0].name for c in CASES])
def test_against_finite_differences(f, make, argnums):
    args = make()
    for k in argnums:
        ref = fd_jacobian(f, args, k)
        close(jacfwd(f, argnums=k)(*args), ref, 1e-6)
        close(jacrev(f, argnums=k)(*args), ref, 1e-6)
        for c in (1, 2, 5):
            close(jacfwd(f, argnums=k, chunk_size=c)(*args), ref, 1e-6)


def test_cast_to_wider_float():
    x = rand(6, dtype=np.float32)
    ref = np.diag(2.0 + 2.0 * x.astype(np.float64))
    close(jacfwd(widen)(x), ref, 1e-6)
    close(jacrev(widen)(x), ref, 1e-6)


@pytest.mark.parametrize("chunk", [1, 3, 4, 7, 64])
def test_predict_chunked_jacfwd(chunk):
    W, b, X = rand(7), 0.3, rand(9, 7)
    close(jacfwd(predict, chunk_size=chunk)(W, b, X), _predict_jac(W, b, X), 1e-12)
    close(jacfwd(predict, argnums=2, chunk_size=chunk)(W, b, X),
          fd_jacobian(predict, (W, b, X), 2), 1e-7)


PREDICT_SRC = """
def predict(W: f64[k], b: f64, inputs: f64[n, k]) -> f64[n]:
    return sigmoid(inputs @ W + b)

def mat_vec(A: f64[m, k], x: f64[k]) -> f64[m]:
    return tanh(A @ x)
"""


def test_chunked_jacrev(monkeypatch):
    """The output basis pulled back in chunks of rows (start > 0), rewritten inside the chunk."""
    monkeypatch.setattr(transpose_mod, "JACREV_BUDGET", 9)
    monkeypatch.setattr(transpose_mod, "_jacrev_lazy", lambda *a: False)
    ks = compile_source(PREDICT_SRC, "chunked_jacrev.py")     # fresh kernels: nothing memoised
    W, b, X = rand(3), 0.3, rand(10, 3)
    close(jacrev(ks["predict"])(W, b, X), _predict_jac(W, b, X), 1e-12)
    A, x = rand(7, 4), rand(4)
    close(jacrev(ks["mat_vec"], argnums=1)(A, x), fd_jacobian(ks["mat_vec"], (A, x), 1), 1e-7)
    close(jacrev(ks["mat_vec"], argnums=0)(A, x), fd_jacobian(ks["mat_vec"], (A, x), 0), 1e-7)


def test_higher_order():
    @kernel
    def energy(x: f64[n]) -> f64:
        return sum(sin(x) * x) + sum(x * x * x)

    @kernel
    def field(x: f64[n]) -> f64[n]:
        return sin(x) * x[0]

    x = rand(4)
    H = np.diag(2 * np.cos(x) - x * np.sin(x) + 6 * x)
    close(hessian(energy)(x), H, 1e-10)
    close(jacfwd(jacrev(energy))(x), H, 1e-10)
    close(jacfwd(jacfwd(energy))(x), H, 1e-10)
    close(jacrev(jacfwd(energy))(x), H, 1e-10)
    # d2 field_i / dx_j dx_l
    T = np.zeros((4, 4, 4))
    for i in range(4):
        T[i, i, 0] += np.cos(x[i])
        T[i, 0, i] += np.cos(x[i])
        T[i, i, i] += -np.sin(x[i]) * x[0]
    close(jacfwd(jacfwd(field))(x), T, 1e-10)
    close(jacfwd(jacrev(field))(x), T, 1e-10)


# ---- the structure of the result --------------------------------------------------------------------------
def _prepared(k, *args):
    return k.lower(*args)._fn


def _ops(fn):
    return list(ir.walk_ops(fn.body))


@pytest.mark.parametrize("transform", [jacfwd, jacrev])
def test_predict_jacobian_has_no_product_with_the_basis(transform):
    """jacfwd/jacrev(predict) is the closed form: the primal matrix-vector product, then
    s(1-s)[:, None] * inputs in one lazy pass; no basis, no product with it, no chunk loop."""
    W, b, X = rand(5, dtype=np.float32), np.float32(0.0), rand(8, 5, dtype=np.float32)
    fn = _prepared(transform(predict32), W, b, X)
    ops = _ops(fn)
    prims = [op.prim for op in ops]
    assert "basis" not in prims
    assert not {"for", "while", "if", "store", "empty"} & set(prims)
    mm = [op for op in ops if op.prim == "matmul"]
    assert len(mm) == 1, ir.print_function(fn)          # inputs @ W, the primal
    assert [o.type.rank for o in mm[0].operands] == [2, 1]
    assert not any(op.prim.startswith("reduce_") for op in ops)


def test_chunked_predict_has_no_product_with_the_basis():
    W, b, X = rand(5), 0.0, rand(8, 5)
    fn = _prepared(jacfwd(predict, chunk_size=2), W, b, X)
    prims = [op.prim for op in _ops(fn)]
    assert "basis" not in prims and prims.count("matmul") == 1
    assert "empty" in prims                              # the accumulator is not zero-filled


def test_fallback_keeps_the_basis_where_it_must():
    """A batched product against the basis (a matrix input) keeps it, materialised: still right."""
    X, B = rand(3, 2), rand(2, 4)
    fn = _prepared(jacfwd(mat_mat), X, B)
    assert "basis" in [op.prim for op in _ops(fn)]
    close(jacfwd(mat_mat)(X, B), fd_jacobian(mat_mat, (X, B), 0), 1e-6)


# ---- the primitive itself: interpreter, MLIR, its own derivative rules ------------------------------------
def test_interpreter_agrees_before_and_after_simplification():
    W, b, X = rand(4), 0.2, rand(6, 4)
    J = _predict_jac(W, b, X)
    for k in (jacfwd(predict), jacrev(predict), jacfwd(predict, chunk_size=3), jacfwd(mat_mat)):
        args = (W, b, X) if k.base is predict else (rand(3, 2), rand(2, 4))
        got = k(*args)
        before = interpret.call(k, args)
        after = interpret.call(k, args, simplify=True)
        close(before, got, 1e-12)
        close(after, got, 1e-12)
        if k.base is predict:
            close(got, J, 1e-12)


def _basis_fn(start, count, n, scaled):
    """f(s: f64[n]) -> basis(start, count, s or 1) * s (a scaled basis whose scale is an input)."""
    s = ir.Value(ir.Type("f64", ("n",)), "s")
    block = ir.Block([s])
    b = Builder(block)
    scale = s if scaled else b.const(1.0, "f64")
    dims = b.dims_of(s)
    basis = b.emit1("basis", [b.const(start, "i64"), b.const(count, "i64"), scale] + dims,
                    {"shape": (count, "n")})
    out = b.emit1("mul", [basis, b.broadcast_to(s, (count, "n"), [b.const(count, "i64")] + dims)])
    b.terminate("return", [out])
    return ir.Function("basis_fn", [s], block, ["s"], ["out"])


def _compiled(fn):
    from compiler.pipeline import compile_function
    from runtime import Signature, make_caller
    c = compile_function(prepare(fn))
    return make_caller(Signature.from_json(c.signature), c.c_address, c.py_address or None)


def test_basis_primitive_values_and_derivatives():
    s = rand(5)
    for scaled in (False, True):
        ref = np.zeros((3, 5))
        for w in range(3):
            ref[w, 1 + w] = (s[1 + w] if scaled else 1.0) * s[1 + w]
        fn = _basis_fn(1, 3, 5, scaled)
        close(interpret.run(fn, [s])[0], ref, 0)
        close(_compiled(_basis_fn(1, 3, 5, scaled))(s), ref, 0)
        # its JVP and VJP (linear in the scale), against the interpreter's finite differences
        f = lambda v: interpret.run(_basis_fn(1, 3, 5, scaled), [v])[0]
        J = fd_jacobian(f, (s,), 0)
        t = rand(5)
        out = interpret.run(jvp_function(_basis_fn(1, 3, 5, scaled)), [s, t])
        close(out[1], np.tensordot(J, t, 1), 1e-7)
        ct = rand(3, 5)
        back = interpret.run(vjp_function(_basis_fn(1, 3, 5, scaled)), [s, ct])
        close(back[1], np.tensordot(ct, J, 2), 1e-7)
        jac = interpret.run(jacfwd_function(_basis_fn(1, 3, 5, scaled), (0,), False), [s])[0]
        close(jac, J, 1e-7)
        close(_compiled(jacfwd_function(_basis_fn(1, 3, 5, scaled), (0,), False))(s), J, 1e-7)
        close(_compiled(vjp_function(_basis_fn(1, 3, 5, scaled)))(s, ct)[1], np.tensordot(ct, J, 2), 1e-7)


def test_mlir_backend_runs_the_basis_and_empty():
    from compiler.mlir import tools
    if tools.find_tools() is None:
        pytest.skip(tools.INSTALL_HINT)
    ks = compile_source(PREDICT_SRC + """
def mat_mat(X: f64[n, k], B: f64[k, m]) -> f64[n, m]:
    return tanh(X @ B)
""", "mlir_basis.py")
    W, b, X = rand(4), 0.2, rand(6, 4)
    for name, args, transforms in (
            ("predict", (W, b, X), (jacfwd, jacrev, lambda f: jacfwd(f, chunk_size=3))),
            ("mat_mat", (rand(3, 2), rand(2, 4)), (jacfwd, lambda f: jacfwd(f, chunk_size=2)))):
        k = ks[name]
        m = k.with_backend("mlir")
        for t in transforms:
            close(t(m)(*args), t(k)(*args), 1e-12)


def test_ptx_assembles_with_the_basis_and_empty(tmp_path):
    import subprocess

    from gpu_tools import INSTALL_HINT, PTXAS as ptxas, find_libdevice
    if ptxas is None or find_libdevice() is None:
        pytest.skip(INSTALL_HINT)
    X, B = rand(3, 2).astype(np.float32), rand(2, 4).astype(np.float32)
    W, b, inp = rand(4).astype(np.float32), np.float32(0.0), rand(5, 4).astype(np.float32)
    for lowered in (jacfwd(mat_mat32).lower(X, B), jacfwd(mat_mat32, chunk_size=2).lower(X, B),
                    jacfwd(predict32).lower(W, b, inp), jacrev(predict32).lower(W, b, inp)):
        ptx = lowered.ptx()
        src = tmp_path / "k.ptx"
        src.write_text(ptx)
        r = subprocess.run([ptxas, "-arch=sm_90", str(src), "-o", str(tmp_path / "k.cubin")],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr


@kernel
def mat_mat32(X: f32[n, k], B: f32[k, m]) -> f32[n, m]:
    return tanh(X @ B)
