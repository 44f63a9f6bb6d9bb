// The LoRA training step on the GPU equals the CPU's: the sharded engine (gathers, recomputation,
// reduce-scatters, fp32 masters, AdamW) on a world of one and on a fake world of 8 (one process
// playing rank 0 of 8, dist/fake_communicator.h), fp32 with TF32 off, three optimizer steps.
#include <gtest/gtest.h>

#include "cvx/dist/fake_communicator.h"
#include "engine_test_util.h"
#include "gpu_test_util.h"

TEST(TrainingStepGpu, LoraStepsOnTheGpuEqualTheCpuStepsOnOneAndEightRanks) {
  CVX_REQUIRE_GPU_TEST_DEVICE(device);
  const cvx::test::NoTf32 no_tf32;
  for (const int world : {1, 8}) {
    for (const std::string variant : {"5b", "1.5-t2v"}) {
      SCOPED_TRACE(variant + " on a world of " + std::to_string(world));
      cvx::test::EngineRunOptions options;
      options.variant = variant;
      options.global_batch = world;  // one sample per rank and micro-step
      cvx::FakeCommunicator cpu_world(0, world), gpu_world(0, world);
      cvx::test::EngineRun cpu(cpu_world, options);
      options.device = device;
      cvx::test::EngineRun gpu(gpu_world, options);
      for (int64_t step = 0; step < 3; ++step) {
        const double a = cpu.step(step), b = gpu.step(step);
        // The same fp32 arithmetic with other kernels (cuBLAS, SDPA): ~1e-7 relative per value.
        EXPECT_NEAR(b, a, 1e-5 * std::abs(a)) << "loss at step " << step + 1;
        EXPECT_NEAR(gpu.last_grad_norm(), cpu.last_grad_norm(), 1e-4 * cpu.last_grad_norm()) << "step " << step + 1;
      }
      const auto x = cpu.full_state(true), y = gpu.full_state(true);
      ASSERT_EQ(x.size(), y.size());
      for (const auto& [name, value] : x) {
        // AdamW moves each element by about lr (1e-3) per step whatever its gradient's size, so
        // gradient rounding shows at lr x its relative size: 1e-6 absolute after three steps.
        const auto other = y.at(name).to(torch::kCPU);
        EXPECT_TRUE(torch::allclose(other, value, 1e-5, 1e-6))
            << name << ": max difference " << (other - value).abs().max().item<double>();
      }
    }
  }
}
