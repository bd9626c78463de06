"""zico_fast: exact ZiCo zero-shot NAS scores from fused C++/CUDA gradient-statistics kernels."""
import torch  # noqa: F401  (loads libtorch, which the extension links against)

try:
    from zico_fast import _C  # noqa: F401  (loading the library registers the zico_fast ops)
except ImportError as error:  # pragma: no cover - only without a build
    raise ImportError(
        "zico_fast's compiled extension (zico_fast._C) is missing or was built against another "
        "torch. Rebuild it in this environment with:  pip install --no-build-isolation -e .  "
        f"(original error: {error})"
    ) from error

from zico_fast import _ops as _ops  # noqa: E402  (fake kernels for torch.compile / opcheck)
from zico_fast._ops import has_cuda_kernels  # noqa: E402
from zico_fast.layers import DEFAULT_LAYER_TYPES, select_layers  # noqa: E402
from zico_fast.errors import DataError, ZiCoUserError  # noqa: E402
from zico_fast.scorer import NonFiniteGradientError, ZeroSpreadWarning, ZiCo, ZiCoResult, zico_score  # noqa: E402
from zico_fast.parallel import Scorer  # noqa: E402

__version__ = "0.1.0"
__all__ = ["zico_score", "ZiCo", "Scorer", "ZiCoResult", "NonFiniteGradientError", "ZeroSpreadWarning", "ZiCoUserError",
           "DataError", "select_layers", "DEFAULT_LAYER_TYPES", "has_cuda_kernels"]
