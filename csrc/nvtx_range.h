// A scoped NVTX range for the C++ ops; compiles to nothing when the NVTX headers were not found.
#pragma once

#ifdef ZICO_FAST_NVTX
#include <nvtx3/nvToolsExt.h>
#endif

namespace zico_fast {

// NVTX3 is header-only: with no profiler attached a push/pop is a few nanoseconds, so the ranges
// stay on in release builds and Nsight shows every op by name.
class NvtxRange {
 public:
  explicit NvtxRange(const char* name) {
#ifdef ZICO_FAST_NVTX
    nvtxRangePushA(name);
#else
    (void)name;
#endif
  }
  ~NvtxRange() {
#ifdef ZICO_FAST_NVTX
    nvtxRangePop();
#endif
  }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

}  // namespace zico_fast
