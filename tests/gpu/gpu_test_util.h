// The device the gpu tests run on: CUDA device 0, or with CVX_GPU_TESTS_ON_CPU=1 on a machine
// without one the CPU (to check the tests' own logic where no GPU is: the comparisons are then
// CPU against CPU). Without either the tests skip.
#pragma once
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <cstring>
#include <optional>

namespace cvx::test {

inline std::optional<torch::Device> gpu_test_device() {
  if (torch::cuda::is_available()) return torch::Device(torch::kCUDA, 0);
  const char* on_cpu = std::getenv("CVX_GPU_TESTS_ON_CPU");
  if (on_cpu != nullptr && std::strcmp(on_cpu, "1") == 0) return torch::Device(torch::kCPU);
  return std::nullopt;
}

// TF32 rounds fp32 matmul inputs to 10 mantissa bits on Ampere and later: the fp32 parity tests
// turn it off (and restore it), so "fp32 on CUDA" means fp32.
class NoTf32 {
 public:
  NoTf32() : cublas_(at::globalContext().allowTF32CuBLAS()), cudnn_(at::globalContext().allowTF32CuDNN()) {
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setAllowTF32CuDNN(false);
  }
  ~NoTf32() {
    at::globalContext().setAllowTF32CuBLAS(cublas_);
    at::globalContext().setAllowTF32CuDNN(cudnn_);
  }
  NoTf32(const NoTf32&) = delete;
  NoTf32& operator=(const NoTf32&) = delete;

 private:
  bool cublas_, cudnn_;
};

}  // namespace cvx::test

#define CVX_REQUIRE_GPU_TEST_DEVICE(var)                                                              \
  const auto var##_or = ::cvx::test::gpu_test_device();                                               \
  if (!var##_or) GTEST_SKIP() << "no CUDA device (CVX_GPU_TESTS_ON_CPU=1 runs the logic on the CPU)"; \
  const torch::Device var = *var##_or
