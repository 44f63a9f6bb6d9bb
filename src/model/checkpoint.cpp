#include "cvx/model/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>

#include "cvx/core/error.h"

namespace cvx {
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct FnHolder : torch::CustomClassHolder {
  CheckpointedFn fn;
  torch::Tensor rng_state;
};

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  static variable_list forward(AutogradContext* ctx, c10::intrusive_ptr<FnHolder> holder, variable_list inputs) {
    holder->rng_state = at::detail::getDefaultCPUGenerator().get_state();
    ctx->saved_data["fn"] = c10::IValue::make_capsule(holder);
    ctx->save_for_backward(inputs);
    torch::NoGradGuard no_grad;
    return holder->fn(inputs);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto holder = c10::static_intrusive_pointer_cast<FnHolder>(ctx->saved_data["fn"].toCapsule());
    const variable_list saved = ctx->get_saved_variables();
    variable_list detached;
    detached.reserve(saved.size());
    for (const auto& s : saved) detached.push_back(s.detach().requires_grad_(s.requires_grad()));
    variable_list outputs;
    {
      // Replay the forward's random draws, then put the generator back where backward found it.
      auto generator = at::detail::getDefaultCPUGenerator();
      const torch::Tensor current = generator.get_state();
      generator.set_state(holder->rng_state);
      torch::AutoGradMode enable(true);
      outputs = holder->fn(detached);
      generator.set_state(current);
    }
    variable_list roots, grads;
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (!outputs[i].requires_grad() || !grad_outputs[i].defined()) continue;
      roots.push_back(outputs[i]);
      grads.push_back(grad_outputs[i]);
    }
    if (!roots.empty()) torch::autograd::backward(roots, grads);
    variable_list result;
    result.push_back(torch::Tensor());  // for the holder argument
    for (const auto& d : detached) result.push_back(d.requires_grad() ? d.grad() : torch::Tensor());
    return result;
  }
};
}  // namespace

variable_list checkpoint(CheckpointedFn fn, const variable_list& inputs) {
  for (const auto& t : inputs) CVX_CHECK(t.defined(), "checkpoint(): inputs must be defined tensors");
  auto holder = c10::make_intrusive<FnHolder>();
  holder->fn = std::move(fn);
  return CheckpointFunction::apply(holder, inputs);
}

}  // namespace cvx
