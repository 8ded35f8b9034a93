"""The on-disk cache of compiled kernels: object code + signature, keyed by the lowered IR,
the target and the toolchain. Entries are written atomically and checked by checksum, so
processes sharing a directory never read a partial entry; a bad entry is rebuilt.
(hashlib, json, ... are imported where used: warmstart.py needs only `cache_dir` and a warm process
should not pay for them.)"""
from __future__ import annotations

import os

MAGIC = b"DSLC1\n"


def cache_dir() -> str:
    return os.environ.get("DSLC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "dslc")


def key_for(*parts: str) -> str:
    import hashlib
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:40]


def load(key: str, directory: str | None = None):
    """(object bytes, metadata dict) or None when absent or corrupt. `directory` overrides
    $DSLC_CACHE_DIR (a background job keeps the directory it was queued for)."""
    import hashlib
    import json
    path = os.path.join(directory or cache_dir(), key + ".dslc")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        if not data.startswith(MAGIC):
            raise ValueError("bad magic")
        body = data[len(MAGIC):]
        digest, rest = body[:64], body[65:]
        if hashlib.sha256(rest).hexdigest().encode() != digest:
            raise ValueError("checksum mismatch")
        n = int(rest[:16])
        meta = json.loads(rest[16:16 + n])
        return rest[16 + n:], meta
    except (ValueError, json.JSONDecodeError):
        try:
            os.unlink(path)                   # corrupt or truncated: drop it, it will be rebuilt
        except OSError:
            pass
        return None


def store(key: str, obj: bytes, meta: dict) -> None:
    import hashlib
    import json
    import tempfile
    import warnings
    d = cache_dir()
    mj = json.dumps(meta, sort_keys=True).encode()
    rest = b"%016d" % len(mj) + mj + obj
    data = MAGIC + hashlib.sha256(rest).hexdigest().encode() + b"\n" + rest
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(d, key + ".dslc"))
    except OSError as e:                      # read-only or full: run without the disk cache
        warnings.warn(f"dslc: cannot write the kernel cache in {d} ({e}); set DSLC_CACHE_DIR "
                      "to a writable directory", RuntimeWarning, stacklevel=3)
