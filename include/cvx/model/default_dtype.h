// Scoped torch default dtype: parameters created inside the scope get it directly, so a bf16 model
// never exists in float32 first (half the peak memory of creating then converting).
#pragma once
#include <torch/torch.h>

namespace cvx {

struct DefaultDtypeGuard {
  explicit DefaultDtypeGuard(torch::Dtype dtype) : previous(torch::get_default_dtype()) {
    torch::set_default_dtype(caffe2::TypeMeta::fromScalarType(dtype));
  }
  ~DefaultDtypeGuard() { torch::set_default_dtype(previous); }
  DefaultDtypeGuard(const DefaultDtypeGuard&) = delete;
  DefaultDtypeGuard& operator=(const DefaultDtypeGuard&) = delete;
  caffe2::TypeMeta previous;
};

}  // namespace cvx
