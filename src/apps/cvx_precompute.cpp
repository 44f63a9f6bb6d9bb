// cvx_precompute: encode a video dataset (VAE latents, T5 prompt embeddings) into one HDF5 store.
#include "cvx/app/app.h"
#include "cvx/app/general_config.h"
#include "cvx/app/program_sections.h"
#include "cvx/core/log.h"
#include "cvx/core/options.h"
#include "cvx/data/data_config.h"
#include "cvx/model/model_config.h"
#include "cvx/precompute/precompute_job.h"

int main(int argc, char** argv) {
  return cvx::run_app("cvx_precompute", argc, argv, [](cvx::AppContext& ctx) {
    cvx::GeneralConfig general;
    cvx::ModelConfig model;
    cvx::DataConfig data;
    cvx::PrecomputeConfig precompute;
    cvx::Options options("cvx_precompute",
                         "encode a video dataset with the CogVideoX VAE and T5 into one shared HDF5 latent store");
    options.add("", general)
        .add("model", model, "the diffusers model whose VAE and T5 encode the data")
        .add("data", data, "dataset, clip geometry, preprocessing, store path")
        .add("precompute", precompute, "the encoding job");
    cvx::add_foreign_sections(options, ctx.name);
    if (!cvx::parse_and_configure(ctx, options, general)) return 0;
    return cvx::run_precompute(ctx, model, data, precompute);
  });
}
