"""IR-to-IR passes that keep a function's meaning: constant folding, CSE, DCE."""
from .simplify import simplify

__all__ = ["simplify"]
