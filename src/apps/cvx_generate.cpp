// cvx_generate: text/image-to-video sampling with a base model and an optional LoRA.
#include <chrono>
#include <iomanip>
#include <sstream>

#include "cvx/app/app.h"
#include "cvx/app/general_config.h"
#include "cvx/app/program_sections.h"
#include "cvx/core/log.h"
#include "cvx/core/options.h"
#include "cvx/pipeline/generate.h"

int main(int argc, char** argv) {
  return cvx::run_app("cvx_generate", argc, argv, [](cvx::AppContext& ctx) {
    cvx::GeneralConfig general;
    cvx::GenerateConfig config;
    cvx::Options options("cvx_generate", "generate videos from a CogVideoX model (+ LoRA) into mp4 files");
    options.add("", general).add("", config);
    cvx::add_foreign_sections(options, ctx.name);
    if (!cvx::parse_and_configure(ctx, options, general)) return 0;
    return cvx::run_generate(ctx, config);
  });
}
