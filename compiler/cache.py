"""The on-disk cache of compiled kernels: object code + signature, keyed by the lowered IR,
the target and the toolchain. Entries are written atomically and checked by checksum, so
processes sharing a directory never read a partial entry; a bad entry is rebuilt.
(hashlib, json, ... are imported where used: warmstart.py needs only `cache_dir` and the sealed-file
helpers below, and a warm process should not pay for them. Keep this module stdlib-only.)"""
from __future__ import annotations

import os

MAGIC = b"DSLC1\n"


def cache_dir() -> str:
    return os.environ.get("DSLC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "dslc")


# --- sealed files: magic + hex checksum + payload, written atomically ---------------------------------
# (shared by this cache, warmstart.py's records and dsl/parser.py's saved tables)

def write_atomic(path: str, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory and a rename, so a
    reader never sees a partial file. Raises OSError (the temporary file is removed)."""
    import tempfile
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        unlink_quiet(tmp)
        raise


def seal(magic: bytes, digest, payload: bytes, sep: bytes = b"") -> bytes:
    """`magic`, the hex checksum `digest(payload)` (a str), `sep`, then `payload`."""
    return magic + digest(payload).encode() + sep + payload


def load_sealed(path: str, magic: bytes, digest, decode, sep: bytes = b""):
    """`decode(payload)` of the file `seal` wrote, or None when it is absent or unreadable, or when
    it is corrupt: a bad magic or checksum, or `decode` raising; a corrupt file is removed (its
    writer rebuilds it)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        if not data.startswith(magic):
            raise ValueError("bad magic")
        n = len(magic) + len(digest(b""))
        head, payload = data[len(magic):n], data[n + len(sep):]
        if data[n:n + len(sep)] != sep or digest(payload).encode() != head:
            raise ValueError("checksum mismatch")
        return decode(payload)
    except Exception:
        unlink_quiet(path)                    # corrupt or truncated: drop it, it will be rebuilt
        return None


def unlink_quiet(path: str):
    try:
        os.unlink(path)
    except OSError:
        pass


def _sha256(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()


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
    path = os.path.join(directory or cache_dir(), key + ".dslc")
    return load_sealed(path, MAGIC, _sha256, _decode, sep=b"\n")


def _decode(rest: bytes):
    import json
    n = int(rest[:16])
    meta = json.loads(rest[16:16 + n])
    return rest[16 + n:], meta


def store(key: str, obj: bytes, meta: dict, directory: str | None = None) -> None:
    """Write an entry (into `directory`, default $DSLC_CACHE_DIR); warns when it cannot."""
    import json
    d = directory or cache_dir()
    mj = json.dumps(meta, sort_keys=True).encode()
    try:
        write_atomic(os.path.join(d, key + ".dslc"),
                     seal(MAGIC, _sha256, b"%016d" % len(mj) + mj + obj, sep=b"\n"))
    except OSError as e:                      # read-only or full: run without the disk cache
        import warnings
        warnings.warn(f"dslc: cannot write the kernel cache in {d} ({e}); set DSLC_CACHE_DIR "
                      "to a writable directory", RuntimeWarning, stacklevel=3)
