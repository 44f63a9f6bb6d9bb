// cvx_generate: text/image-to-video sampling with a base model and an optional LoRA.
#include "cvx/app/app.h"
#include "cvx/app/general_config.h"
#include "cvx/core/error.h"
#include "cvx/core/options.h"

int main(int argc, char** argv) {
  return cvx::run_app("cvx_generate", argc, argv, [](cvx::AppContext& ctx) {
    cvx::GeneralConfig general;
    cvx::Options options("cvx_generate", "generate videos from a CogVideoX model (+ LoRA) into mp4 files");
    options.add("", general).foreign_sections({"model", "data", "precompute", "train", "lora", "parallel", "validation"});
    if (!cvx::parse_and_configure(ctx, options, general)) return 0;
    CVX_THROW_AS(cvx::Error, "sampling pipelines are not part of this build yet");
    return 1;
  });
}
