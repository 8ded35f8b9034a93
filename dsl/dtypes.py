"""Annotation objects, so kernels can be written without `from __future__ import annotations`:
`def f(x: f32["n"], k: i64) -> f32["n"]`. The compiler reads the annotation's source text;
these objects only have to survive Python evaluating it."""
from __future__ import annotations


class DType:
    def __init__(self, name: str):
        self.name = name

    def __getitem__(self, dims):
        return ArrayAnnotation(self, dims if isinstance(dims, tuple) else (dims,))

    def __repr__(self):
        return self.name


class ArrayAnnotation:
    def __init__(self, dtype: DType, dims: tuple):
        self.dtype, self.dims = dtype, dims

    def __repr__(self):
        return f"{self.dtype.name}[{', '.join(map(str, self.dims))}]"


f32, f64, i32, i64, bool_ = DType("f32"), DType("f64"), DType("i32"), DType("i64"), DType("bool")


class ParamType:
    """A kernel parameter's type as the compiler specialises on it: dtype and dims (names, ints;
    () for scalars). Lives here, not in lower.py, so calling a cached kernel needs no compiler.
    (A plain class with a dataclass's __init__/__eq__/__repr__: @dataclass costs ~0.5 ms at import.)"""
    __slots__ = ("dtype", "dims")
    __hash__ = None                     # mutable, as the @dataclass it replaces

    def __init__(self, dtype: str, dims: tuple):
        self.dtype = dtype
        self.dims = dims                # () for scalars

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.dtype, self.dims) == (other.dtype, other.dims)

    def __repr__(self):
        return f"ParamType(dtype={self.dtype!r}, dims={self.dims!r})"
