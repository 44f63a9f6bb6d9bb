// Top-level options every cvx program has: logging and threads.
#pragma once
#include <cstdint>
#include <string>

#include "cvx/core/log.h"

namespace cvx {

struct GeneralConfig {
  std::string log_level = "info";
  bool log_all_ranks = false;
  int64_t num_threads = 0;  // 0: cores of this process / ranks on the node

  template <class V>
  void visit(V& v) {
    v.choice("log_level", log_level, {"trace", "debug", "info", "warning", "error"}, "least severe level logged");
    v("log_all_ranks", log_all_ranks, "log from every rank (default: rank 0, plus errors from any rank)");
    v("num_threads", num_threads,
      "libtorch intra-op threads per rank (0 = the cores of this process / ranks per node)");
  }
  void validate() const {}
};

}  // namespace cvx
