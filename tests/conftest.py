"""Shared test setup: a per-session kernel cache directory, so runs never see stale entries."""
import os
import sys
import tempfile

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

if not os.environ.get("DSLC_TEST_KEEP_CACHE"):
    os.environ["DSLC_CACHE_DIR"] = tempfile.mkdtemp(prefix="dslc-test-cache-")


def pytest_collection_modifyitems(config, items):
    """Start the slow all-kernels PTX check in the background when it is selected (see
    tests/test_ptx_all_kernels.py), so that it overlaps the rest of the suite."""
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and module.__name__.endswith("test_ptx_all_kernels"):
            item.module.start_background()
            break
