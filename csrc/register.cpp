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
  // In place: x = clamp(x, 0, upper); returns the mask, in the order guided_relu reads x.
  m.def("guided_relu_(Tensor(a!) x, float? upper) -> Tensor");
  // grad_output holds `copies` stacked copies of x's shape (dim 0 multiplied), laid out as
  // channels_last or contiguous like x was; returns grad * bit * (grad > 0) per copy.
  m.def("guided_relu_backward(Tensor grad_output, Tensor mask, bool channels_last, int copies) -> Tensor");
  // Writes occluded copies of images (N, C, H, W) into out (rows, C, H, W): row r is image
  // r % N with window position first + r / N filled from baseline (N, C, H, W). Positions
  // are row-major over the window's steps along (C, H, W); out is contiguous or channels_last.
  m.def("occlusion_batch(Tensor images, Tensor baseline, int[] window, int[] stride, int first, Tensor(a!) out) -> ()");
  // drops (rows, positions): each position's score drop -> (rows, C, H, W) heat map, each
  // pixel the mean drop over the positions whose window covers it (Captum's Occlusion).
  m.def("occlusion_scatter(Tensor drops, int[] window, int[] stride, int[] size) -> Tensor");
}
