"""zico_fast: exact ZiCo zero-shot NAS scores from fused C++/CUDA gradient-statistics kernels."""
try:
    from zico_fast import _C  # noqa: F401  (loading the library registers the zico_fast ops)
except ImportError as error:  # pragma: no cover - only without a build
    raise ImportError(
        "zico_fast's compiled extension (zico_fast._C) is missing or was built against another "
        "torch. Rebuild it in this environment with:  pip install --no-build-isolation -e .  "
        f"(original error: {error})"
    ) from error

__version__ = "0.1.0"
