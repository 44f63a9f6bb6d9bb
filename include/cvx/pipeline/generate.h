// The cvx_generate job: load the pipeline (+ LoRA) once, render every prompt to mp4.
#pragma once
#include "cvx/app/app.h"
#include "cvx/pipeline/generate_config.h"

namespace cvx {

// Prompts are spread over the ranks (prompt i on rank i mod world size); returns the exit code.
int run_generate(const AppContext& ctx, const GenerateConfig& config);

}  // namespace cvx
