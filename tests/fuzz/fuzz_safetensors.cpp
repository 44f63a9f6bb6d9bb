// libFuzzer harness for the safetensors header parser. Any input must either be rejected with a
// one-line cvx::FormatError or parse into tensor ranges that tile the data lying inside the input;
// a crash, a sanitizer report, any other exception or a broken invariant is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "cvx/core/error.h"
#include "cvx/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const cvx::SafetensorsHeader header = cvx::parse_safetensors(data, size, "fuzz input");
    if (8 + header.header_size + header.data_size != size) std::abort();
    const uint8_t* buffer = data + 8 + header.header_size;
    // Reading every byte of every range lets ASan flag one that strays outside the input.
    volatile uint8_t sink = 0;
    uint64_t covered = 0;
    for (const cvx::TensorInfo& t : header.tensors) {
      for (uint64_t i = t.begin; i < t.end; ++i) sink = sink ^ buffer[i];
      if (t.begin != covered ||
          static_cast<uint64_t>(t.numel()) * cvx::safetensors_dtype_size(t.dtype) != t.num_bytes()) {
        std::abort();
      }
      covered = t.end;
    }
    if (covered != header.data_size) std::abort();
  } catch (const cvx::FormatError& e) {
    if (std::strchr(e.what(), '\n') != nullptr) std::abort();
  }
  return 0;
}
