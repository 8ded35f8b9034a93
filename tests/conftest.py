"""Shared test setup: a per-session kernel cache directory, so runs never see stale entries."""
import os
import sys
import tempfile

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

if not os.environ.get("DSLC_TEST_KEEP_CACHE"):
    os.environ["DSLC_CACHE_DIR"] = tempfile.mkdtemp(prefix="dslc-test-cache-")
