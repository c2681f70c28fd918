// Schemas of the pyfastviz operators; kernels register per device in cpu/ and cuda/.
#include <Python.h>
#include <torch/library.h>

// An importable module, so `import pyfastviz._C` loads the library and its registrations.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

TORCH_LIBRARY(pyfastviz, m) {
  // (out, mask): out = clamp(x, 0, upper); mask = 1 bit per element of x in memory order,
  // as int32 words, set where 0 < x < upper. x is read as contiguous or channels_last.
  m.def("guided_relu(Tensor x, float? upper) -> (Tensor, Tensor)");
  // grad_output holds `copies` stacked copies of x's shape (dim 0 multiplied), laid out as
  // channels_last or contiguous like x was; returns grad * bit * (grad > 0) per copy.
  m.def("guided_relu_backward(Tensor grad_output, Tensor mask, bool channels_last, int copies) -> Tensor");
}
