// cvx_make_tiny OUT_DIR --variant V [--seed N]: a complete random tiny model folder in diffusers layout.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "cvx/core/error.h"
#include "cvx/model/model_variant.h"
#include "cvx/model/tiny_pipeline.h"

int main(int argc, char** argv) {
  std::string out, variant = cvx::kVariant5b;
  uint64_t seed = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--variant" && i + 1 < argc) {
      variant = argv[++i];
    } else if (arg == "--seed" && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "-h" || arg == "--help") {
      std::printf(
          "usage: cvx_make_tiny OUT_DIR [--variant %s] [--seed N]\n"
          "Writes a tiny random CogVideoX model folder (diffusers layout) for demos and tests.\n",
          cvx::released_variant_list("|").c_str());
      return 0;
    } else if (out.empty() && arg.rfind("--", 0) != 0) {
      out = arg;
    } else {
      std::fprintf(stderr, "cvx_make_tiny: unexpected argument '%s' (see --help)\n", arg.c_str());
      return 2;
    }
  }
  if (out.empty()) {
    std::fprintf(stderr, "usage: cvx_make_tiny OUT_DIR [--variant V] [--seed N]\n");
    return 2;
  }
  try {
    cvx::write_tiny_pipeline(out, variant, seed);
    std::printf("cvx_make_tiny: wrote a tiny %s model to %s\n", variant.c_str(), out.c_str());
    return 0;
  } catch (const cvx::Error& e) {
    std::fprintf(stderr, "cvx_make_tiny: error: %s\n", e.message().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cvx_make_tiny: error: %s\n", e.what());
  }
  return 1;
}
