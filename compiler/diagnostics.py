"""Source locations and the compiler's exceptions, formatted as `file:line:col: error: ...`."""
from __future__ import annotations


class Loc:
    """Where an IR op came from: file, 1-based line and column, and that source line's text.
    Immutable and hashable, like the frozen dataclass it was (written out: every dslc process
    imports this module, and @dataclass costs ~1.5 ms at import)."""
    __slots__ = ("filename", "line", "col", "text")

    def __init__(self, filename: str = "<unknown>", line: int = 0, col: int = 0, text: str = ""):
        object.__setattr__(self, "filename", filename)
        object.__setattr__(self, "line", line)
        object.__setattr__(self, "col", col)
        object.__setattr__(self, "text", text)

    def _key(self):
        return (self.filename, self.line, self.col, self.text)

    def __eq__(self, other):
        return self._key() == other._key() if other.__class__ is self.__class__ else NotImplemented

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return f"Loc(filename={self.filename!r}, line={self.line!r}, col={self.col!r}, text={self.text!r})"

    def __setattr__(self, name, value):
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name):
        raise AttributeError(f"cannot delete field {name!r}")

    def __reduce__(self):
        return (Loc, self._key())

    def __str__(self) -> str:
        return f"{self.filename}:{self.line}:{self.col}"

    def caret(self) -> str:
        if not self.text:
            return ""
        return f"    {self.text}\n    {' ' * max(self.col - 1, 0)}^"


UNKNOWN = Loc()


def format_diagnostic(message: str, loc: Loc | None, kind: str = "error") -> str:
    if loc is None or loc.line == 0:
        return f"{kind}: {message}"
    text = f"{loc}: {kind}: {message}"
    caret = loc.caret()
    return text + ("\n" + caret if caret else "")


class DslcError(Exception):
    """Base of every error dslc reports about a user's kernel; `str()` is the full diagnostic."""

    def __init__(self, message: str, loc: Loc | None = None):
        self.message = message
        self.loc = loc
        super().__init__(format_diagnostic(message, loc))


class DslSyntaxError(DslcError, SyntaxError):
    def __str__(self):
        return format_diagnostic(self.message, self.loc)


class DslNameError(DslcError, NameError):
    pass


class DslTypeError(DslcError, TypeError):
    pass


class DslValueError(DslcError, ValueError):
    pass


class UnsupportedError(DslcError, NotImplementedError):
    """A construct the language does not support, or a primitive without the rule asked for."""
