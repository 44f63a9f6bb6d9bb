// Host (CPU) allocator policy for tensor workloads.
#pragma once

namespace cvx {

// glibc serves every allocation above 128 KiB-32 MiB with a fresh mmap and returns it with munmap,
// so each activation buffer of a CPU step is page-faulted and zeroed again (measured: a CPU
// training step of the tiny transformer spends ~40% of its time there). Raising the mmap and trim
// thresholds keeps freed buffers in the heap for reuse. Idempotent; call before heavy work.
void tune_host_allocator();

}  // namespace cvx
