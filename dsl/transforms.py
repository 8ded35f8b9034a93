"""Derivative transforms. Each returns a `Kernel` whose IR is produced by an IR-to-IR pass over
its base kernel's IR, so transforms compose (`f.jvp.jvp`, `jacfwd(f.jvp)`) and every derivative
compiles to one fused native function.

The AD passes (compiler/ad) are imported by the transforms when they run, not here: making
`grad(f)` is cheap, and calling it needs no compiler at all when it is warm-started
(dsl/kernel.py). Each derived kernel carries a `spec`, the text of the transform and its
arguments, which with its base kernel's identity keys its warm-start records."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from .dtypes import ParamType
from .kernel import KernelBase

if TYPE_CHECKING:                           # annotations only
    from compiler import ir


def is_float(dtype: str) -> bool:
    """compiler.ir.is_float, without importing the IR module (~4 ms) into a warm process."""
    return dtype in ("f32", "f64")


# the AD passes, imported on first use (compiler.ad pulls in the IR, the builder and the primitives)
def jvp_function(*a, **kw):
    from compiler.ad.jvp import jvp_function as f
    return f(*a, **kw)


def jacfwd_function(*a, **kw):
    from compiler.ad.jacobian import jacfwd_function as f
    return f(*a, **kw)


def grad_function(*a, **kw):
    from compiler.ad.transpose import grad_function as f
    return f(*a, **kw)


def jacrev_function(*a, **kw):
    from compiler.ad.transpose import jacrev_function as f
    return f(*a, **kw)


def vjp_function(*a, **kw):
    from compiler.ad.transpose import vjp_function as f
    return f(*a, **kw)


def unconnected_params(*a, **kw):
    from compiler.ad.transpose import unconnected_params as f
    return f(*a, **kw)


class DerivedKernel(KernelBase):
    """A kernel defined as `transform(IR of base)`. Its arguments are the base's arguments
    followed by `extra(base_param_types)` (e.g. one tangent per floating-point parameter)."""

    def __init__(self, base: KernelBase, name: str, transform: Callable[[ir.Function], ir.Function],
                 extra: Callable[[tuple], list], names: Callable[[list, tuple], list], check=None,
                 post: Callable | None = None, spec: str | None = None):
        self.base = base
        self._post = post
        self._spec = spec               # e.g. "grad((0,),False)"; None: never warm-started
        self._init_base(name, base.boundscheck)
        self._transform = transform
        self._extra = extra
        self._names_fn = names
        self._check = check

    def _base_types(self, seq) -> tuple:
        nb = self.base._arity(seq)
        head = tuple(seq[:nb])
        if all(isinstance(x, ParamType) for x in head) and len(head) == nb:
            return head
        return tuple(self.base._param_types(head))

    def _arity(self, seq) -> int:
        return self.base._arity(seq) + len(self._extra(self._base_types(seq)))

    def _warm_identity(self) -> str | None:
        base = self.base._warm_identity()
        if self._spec is None or base is None or self.backend != "native":
            return None
        return f"{self._spec}<{base}>"

    def _fully_declared(self) -> bool:
        return self.base._fully_declared()

    def param_names(self, seq) -> list:
        return self._names_fn(self.base.param_names(seq), self._base_types(seq))

    def _param_types(self, args) -> tuple:
        base_pt = self._base_types(args)
        extra = self._extra(base_pt)
        if len(args) != len(base_pt) + len(extra):
            raise TypeError(f"{self.name}() takes {len(base_pt) + len(extra)} argument(s) "
                            f"({', '.join(self.param_names(args))}), got {len(args)}")
        return tuple(base_pt) + tuple(extra)

    def _lower_ir(self, ptypes) -> ir.Function:
        nb = self.base._arity(ptypes)
        from compiler.prims.control import inline_forks
        base = self.base._lower_ir(tuple(ptypes[:nb]))
        inline_forks(base.body)             # the derivative passes see a fork as its two regions
        fn = self._transform(base)
        fn.param_names = self.param_names(ptypes)
        return fn

    def __call__(self, *args, target=None):
        f = self._fixed
        if f is not None and target is None and self._post is None and self._device_hint is None:
            # KernelBase.__call__'s fast path without its frame (~0.4 us of B6's JVP call)
            try:
                return f(*args)
            except TypeError:
                pass                             # device arrays, or a bad argument: the full path
            except ValueError:
                if self._check is not None:
                    self._check(self, args)
                raise
        try:
            out = KernelBase.__call__(self, *args, target=target)
        except (TypeError, ValueError):
            # the compiled entry point's checks already refuse a bad tangent; this Python check
            # (~10 us, so not on every call) names the primal parameter it belongs to
            if self._check is not None:
                self._check(self, args)
            raise
        return self._post(out) if self._post is not None else out


def _unique(names: list) -> list:
    """Make derived parameter names distinct (a second-order tangent of x would repeat x_dot)."""
    seen, out = set(), []
    for n in names:
        m, k = n, 2
        while m in seen:
            m, k = f"{n}{k}", k + 1
        seen.add(m)
        out.append(m)
    return out


def _float_positions(ptypes) -> list:
    return [k for k, p in enumerate(ptypes) if is_float(p.dtype)]


def _check_tangents(kernel, args):
    """A tangent must have its primal's shape and dtype (TypeError naming the parameter)."""
    nb = kernel.base._arity(args)
    if len(args) < nb:
        return
    names = kernel.base.param_names(args)
    for t_idx, p_idx in enumerate(_float_positions(kernel._base_types(args))):
        if nb + t_idx >= len(args):
            return
        p, t = args[p_idx], args[nb + t_idx]
        ps, ts = np.shape(p), np.shape(t)
        if ps != ts:
            raise TypeError(f"tangent for parameter '{names[p_idx]}' has shape {ts}, its primal has shape {ps}")
        pd, td = getattr(p, "dtype", None), getattr(t, "dtype", None)
        if pd is not None and td is not None and pd != td:
            raise TypeError(f"tangent for parameter '{names[p_idx]}' has dtype {td}, its primal has dtype {pd}")


def jvp_kernel(f: KernelBase, only: tuple | None = None) -> DerivedKernel:
    """f.jvp; with `only` (indices into f's floating-point parameters) the kernel takes tangents
    for those parameters alone and the others are symbolic zeros (no code is generated for them)."""
    def pos(pt):
        fp = _float_positions(pt)
        return fp if only is None else [fp[j] for j in only]
    suffix = "" if only is None else "[" + ",".join(map(str, only)) + "]"
    return DerivedKernel(
        f, f.name + ".jvp" + suffix, lambda fn: jvp_function(fn, name=fn.name + "_jvp",
                                                          wrt=None if only is None else pos(
                                                              [p.type for p in fn.params])),
        lambda pt: [pt[k] for k in pos(pt)],
        lambda names, pt: _unique(list(names) + [names[k] + "_dot" for k in pos(pt)]),
        _check_tangents if only is None else None, spec="jvp" + suffix)


def jvp(f: KernelBase, primals: Sequence, tangents: Sequence):
    """`(f(*primals), J(primals) @ tangents)`, as `jax.jvp`: one tangent per floating-point
    parameter; a tangent given as None is zero and costs nothing (a symbolic zero)."""
    primals, tangents = tuple(primals), tuple(tangents)
    if any(t is None for t in tangents):
        # None: a zero tangent known when compiling, so the derivative kernel skips that direction
        only = tuple(j for j, t in enumerate(tangents) if t is not None)
        cache = f.__dict__.setdefault("_partial_jvps", {})
        if only not in cache:
            cache[only] = jvp_kernel(f, only)
        nf = len(_float_positions(f._param_types(primals)))
        if len(tangents) != nf:
            raise TypeError(f"jvp: {f.name} takes {nf} tangent(s) (one per floating-point parameter), "
                            f"got {len(tangents)}")
        out = cache[only](*primals, *(t for t in tangents if t is not None))
    else:
        out = f.jvp(*primals, *tangents)
    n = len(out) // 2
    outs, touts = out[:n], out[n:]
    if n == 1 and not _returns_tuple(f, primals):
        return outs[0], touts[0]
    return tuple(outs), tuple(touts)


def _returns_tuple(f, primals) -> bool:
    return f._caller(f._param_types(primals)).signature.tuple_result


def _freeze(v):
    return tuple(_freeze(x) for x in v) if isinstance(v, (list, tuple)) else v


def _memoised(transform):
    """Return the same derived kernel for the same (kernel, arguments): `grad(f)(x)` written
    inside a loop compiles once, as `jax.jit(jax.grad(f))` users expect."""
    import functools

    @functools.wraps(transform)
    def wrapper(f, *args, **kw):
        key = (transform.__name__, _freeze(args), _freeze(tuple(sorted(kw.items()))))
        try:
            hash(key)
        except TypeError:
            return transform(f, *args, **kw)
        cache = f.__dict__.setdefault("_derived", {})
        k = cache.get(key)
        if k is None:
            k = cache[key] = transform(f, *args, **kw)
        return k
    return wrapper



@_memoised
def jacfwd(f: KernelBase, argnums=0, chunk_size: int | None = None) -> KernelBase:
    """The Jacobian of f w.r.t. args[argnums] (shape out.shape + in.shape), by vector-mode forward
    differentiation: the basis tangents go through one pass per chunk of columns (by default as
    many columns as keep the tangent block under 2**24 elements; `chunk_size` sets it)."""
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError("chunk_size must be a positive int")
    if isinstance(argnums, (tuple, list)):
        if len(set(argnums)) != len(argnums):
            raise ValueError(f"argnums {tuple(argnums)} names the same argument twice")
        argnums = tuple(argnums)
    elif not isinstance(argnums, int):
        raise TypeError("argnums must be an int or a tuple of ints")
    nums = argnums if isinstance(argnums, tuple) else (argnums,)
    return DerivedKernel(f, f"jacfwd({f.name})",
                         lambda fn: jacfwd_function(fn, nums, isinstance(argnums, tuple), chunk_size),
                         lambda pt: [], lambda names, pt: list(names),
                         spec=f"jacfwd({nums!r},{isinstance(argnums, tuple)},{chunk_size!r})")




def _output_types(f: KernelBase, base_pt) -> list:
    """The result types of `f` for these parameter types (as ParamTypes, for cotangents)."""
    fn = f._lower_ir(tuple(base_pt))
    return [ParamType(t.dtype, tuple(t.shape)) for t in fn.result_types]


def vjp_kernel(f: KernelBase) -> DerivedKernel:
    return DerivedKernel(
        f, f.name + ".vjp", lambda fn: vjp_function(fn, name=fn.name + "_vjp"),
        lambda pt: _output_types(f, pt),
        lambda names, pt: _unique(list(names) + [f"ct{k}" for k in range(len(_output_types(f, pt)))]),
        spec="vjp")


def vjp(f: KernelBase, *primals):
    """`(f(*primals), pullback)` as `jax.vjp`; `pullback(ct)` returns one cotangent per parameter
    (None for integer and bool parameters)."""
    out = f(*primals)
    pt = f._param_types(primals)
    is_tuple = isinstance(out, tuple)
    float_pos = _float_positions(pt)

    def pullback(ct):
        cts = tuple(ct) if is_tuple else (ct,)
        res = f.vjp(*primals, *cts)
        grads = res[len(cts):]
        full = [None] * len(pt)
        for k, g in zip(float_pos, grads):
            full[k] = g
        return tuple(full)
    return out, pullback


def _argnums(argnums):
    if isinstance(argnums, (tuple, list)):
        if len(set(argnums)) != len(argnums):
            raise ValueError(f"argnums {tuple(argnums)} names the same argument twice")
        return tuple(argnums), True
    if not isinstance(argnums, int) or isinstance(argnums, bool):
        raise TypeError("argnums must be an int or a tuple of ints")
    return (argnums,), False


def _resolve_argnums(nums, fn):
    n = len(fn.params)
    for k in nums:
        if not -n <= k < n:
            from compiler.diagnostics import DslValueError
            raise DslValueError(f"argnums {k} is out of range for '{fn.name}' with {n} parameter(s)", fn.loc)
    return tuple(k % n for k in nums)


@_memoised
def grad(f: KernelBase, argnums=0, unconnected: str = "zero") -> KernelBase:
    """A kernel returning d f / d args[argnums] for a scalar-valued f (reverse mode, one fused
    function). Inputs the output does not depend on get zeros, or None with unconnected="none"
    (TensorFlow's `unconnected_gradients`)."""
    nums, as_tuple = _argnums(argnums)
    if unconnected not in ("zero", "none"):
        raise ValueError("unconnected must be 'zero' or 'none'")
    k = DerivedKernel(f, f"grad({f.name})",
                      lambda fn: grad_function(fn, _resolve_argnums(nums, fn), as_tuple=as_tuple),
                      lambda pt: [], lambda names, pt: list(names), spec=f"grad({nums!r},{as_tuple})")
    if unconnected == "none":
        return _NoneForUnconnected(k, f, nums, as_tuple)
    return k


class _NoneForUnconnected:
    """`grad(..., unconnected="none")`: the gradient kernel, with None for inputs the output
    does not depend on (decided from the IR, per signature)."""

    def __init__(self, kernel, base, nums, as_tuple):
        self.kernel, self.base, self.nums, self.as_tuple = kernel, base, nums, as_tuple
        self.name = kernel.name
        self._cache = {}

    def __call__(self, *args, target=None):
        out = self.kernel(*args, target=target)
        pt = self.base._param_types(args)
        key = tuple((p.dtype, tuple(p.dims)) for p in pt)
        if key not in self._cache:
            fn = self.base._lower_ir(pt)
            nums = _resolve_argnums(self.nums, fn)
            dead = unconnected_params(fn)
            self._cache[key] = [k in dead for k in nums]
        outs = out if self.as_tuple else (out,)
        outs = tuple(None if dead else o for o, dead in zip(outs, self._cache[key]))
        return outs if self.as_tuple else outs[0]

    def lower(self, *args):
        return self.kernel.lower(*args)


@_memoised
def value_and_grad(f: KernelBase, argnums=0) -> KernelBase:
    """A kernel returning `(f(*args), grad)`; grad is a tuple when argnums is."""
    nums, as_tuple = _argnums(argnums)
    post = (lambda out: (out[0], tuple(out[1:]))) if as_tuple else None
    # a 1-tuple argnums still returns (value, (grad,)); the kernel itself returns a flat tuple
    return DerivedKernel(f, f"value_and_grad({f.name})",
                         lambda fn: grad_function(fn, _resolve_argnums(nums, fn), with_value=True),
                         lambda pt: [], lambda names, pt: list(names), post=post,
                         spec=f"value_and_grad({nums!r},{as_tuple})")


@_memoised
def jacrev(f: KernelBase, argnums=0) -> KernelBase:
    """The Jacobian of f's single output w.r.t. args[argnums] (shape out.shape + in.shape) by
    reverse mode."""
    nums, as_tuple = _argnums(argnums)
    return DerivedKernel(f, f"jacrev({f.name})",
                         lambda fn: jacrev_function(fn, _resolve_argnums(nums, fn), as_tuple),
                         lambda pt: [], lambda names, pt: list(names), spec=f"jacrev({nums!r},{as_tuple})")


@_memoised
def hessian(f: KernelBase, argnums=0) -> KernelBase:
    """`jacfwd(jacrev(f))`: forward over reverse."""
    return jacfwd(jacrev(f, argnums), argnums)


def hvp(f: KernelBase, primals: Sequence, tangents: Sequence):
    """Hessian-vector product of a scalar f, forward-over-reverse: `jvp(grad(f), ...)[1]`, with
    one tangent per floating-point parameter; returns one entry per floating-point parameter."""
    primals = tuple(primals)
    pt = f._param_types(primals)
    fl = tuple(_float_positions(pt))
    g = grad(f, argnums=fl)
    _, out = jvp(g, primals, tangents)
    return out if len(fl) > 1 else out[0]
