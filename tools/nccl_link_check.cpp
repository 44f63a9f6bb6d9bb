// Built only where a CUDA toolkit and NCCL exist but libtorch is CPU-only: links the NCCL
// communicator so it keeps compiling, and says whether NCCL support is compiled in. Touches no GPU.
#include <cstdio>

#include "cvx/dist/nccl_communicator.h"

int main() {
  // Taking the factory's address makes the NCCL path part of the link even though it never runs.
  auto* volatile factory = &cvx::make_nccl_communicator;
  std::printf("cvx_nccl_link_check: NCCL communicator linked (%s), NCCL support compiled in: %s\n",
              factory != nullptr ? "factory present" : "factory missing", cvx::nccl_available() ? "yes" : "no");
  return cvx::nccl_available() ? 0 : 1;
}
