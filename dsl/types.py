"""Annotation names for kernels written without `from __future__ import annotations`.

Python evaluates annotations when the `def` runs, so `x: f32["n"]` needs a subscriptable `f32`
in scope: `from dsl import kernel, f32, f64`. The objects only exist to be evaluated; the kernel
reads its annotations from the source text.
"""
from __future__ import annotations


class DType:
    """`f32`, `f32["n"]`, `f64["m", "n"]`, `i64[3]`: a dtype, subscripted with dims."""

    def __init__(self, name: str):
        self.name = name

    def __getitem__(self, dims):
        dims = dims if isinstance(dims, tuple) else (dims,)
        return ArrayType(self, dims)

    def __repr__(self):
        return self.name


class ArrayType:
    def __init__(self, dtype: DType, dims: tuple):
        self.dtype, self.dims = dtype, dims

    def __repr__(self):
        def fmt(d):
            return ":" if isinstance(d, slice) else str(d)
        return f"{self.dtype.name}[{', '.join(fmt(d) for d in self.dims)}]"


f32 = DType("f32")
f64 = DType("f64")
i32 = DType("i32")
i64 = DType("i64")
bool_ = DType("bool")

__all__ = ["f32", "f64", "i32", "i64", "bool_", "DType", "ArrayType"]
