// The op schemas of zico_fast (written once; each backend registers its implementation) and the
// Python module `zico_fast._C`, whose import runs the registrations.
#include <Python.h>
#include <torch/library.h>

#include <vector>

// NOTE: [Op contract]
// Every op takes lists of tensors, one entry per selected weight, and works on all of them in one
// parallel pass (CPU) or one launch (CUDA). Statistics are float32 whatever the gradient dtype;
// see csrc/zico_math.h for the math. `bad_batch[i]` is a one-element int32 tensor that receives
// min(bad_batch[i], batch index) when tensor i holds a non-finite gradient.
//
// NOTE: [cudagraph_unsafe]
// The CUDA implementations upload a per-call launch plan from host memory, which a CUDA graph
// replay would not redo, so they refuse capture. The tag tells torch.compile(mode="reduce-overhead")
// to run the ops outside its graphs (splitting around them) instead of capturing them and failing.
TORCH_LIBRARY(zico_fast, m) {
  const std::vector<at::Tag> tags = {at::Tag::cudagraph_unsafe};
  // Adds one batch of gradients to the running moments. With initialize=true the moments are
  // (over)written from the pair (shifts, grads): shifts hold the previous batch's gradients.
  m.def(
      "accumulate_(Tensor[] grads, Tensor[] shifts, Tensor(a!)[] sum_dev, Tensor(b!)[] sum_sq_dev, "
      "Tensor(c!)[] sum_abs, Tensor(d!)[] bad_batch, int batch, bool initialize) -> ()",
      tags);
  // Per tensor, the float64 sum over kept elements of mean|g| / std(g) after `count` samples.
  m.def("ratio_sums(Tensor[] sum_dev, Tensor[] sum_sq_dev, Tensor[] sum_abs, int count) -> Tensor", tags);
  // The N = 2 closed form: per tensor, sum over kept elements of (|g1| + |g2|) / |g1 - g2|,
  // straight from the two gradients, with no moments stored.
  m.def("pair_ratio_sums(Tensor[] first, Tensor[] second, Tensor(a!)[] bad_batch, int batch) -> Tensor", tags);
  // A network's default initialisation: uniform[i] <- U[-bounds[i], bounds[i]) drawn in list order
  // from the MT19937 stream torch.manual_seed(seed) would start, constant[i] <- values[i]
  // (csrc/init_weights.cpp; one implementation for every device).
  m.def("init_weights_(Tensor(a!)[] uniform, float[] bounds, Tensor(b!)[] constant, float[] values, int seed) -> ()");
}

namespace zico_fast {
PyMethodDef* plan_join_methods();  // csrc/plan_join.cpp
}

// NOTE: [Module]
// The ops live in the dispatcher, not in this module; importing it loads the library. The module's
// one function, join_plan, works on Python objects rather than tensors (csrc/plan_join.cpp).
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, zico_fast::plan_join_methods()};
  return PyModule_Create(&module_def);
}
