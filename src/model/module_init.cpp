#include "cvx/model/module_init.h"

#include "cvx/core/tensor_storage.h"

namespace cvx {

torch::Tensor new_parameter(at::IntArrayRef shape, const ModuleInit& init) {
  return init.materialize ? torch::empty(shape, init.options()) : unmaterialized_tensor(shape, init.options());
}

void apply_init(torch::nn::Module& module, const ModuleInit& init) {
  torch::NoGradGuard no_grad;
  auto convert = [&](torch::Tensor& t) {
    const auto dtype = t.is_floating_point() ? init.dtype : t.scalar_type();
    t.set_data(init.materialize ? t.to(init.device, dtype)
                                : unmaterialized_tensor(t.sizes(), t.options().device(init.device).dtype(dtype)));
  };
  for (auto& p : module.parameters(/*recurse=*/true)) convert(p);
  for (auto& b : module.buffers(/*recurse=*/true)) convert(b);
}

}  // namespace cvx
