#include "cvx/model/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>

#include "cvx/core/error.h"

namespace cvx {
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct FnHolder : torch::CustomClassHolder {
  CheckpointedFn fn;
  variable_list params;
  torch::Tensor rng_state;
};

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  // Inputs and parameters arrive as TensorLists: autograd only tracks tensors passed as Tensor or
  // TensorList (a std::vector would be taken for a non-tensor argument and cut the graph).
  static variable_list forward(AutogradContext* ctx, c10::intrusive_ptr<FnHolder> holder, at::TensorList inputs,
                               at::TensorList params) {
    holder->rng_state = at::detail::getDefaultCPUGenerator().get_state();
    holder->params.assign(params.begin(), params.end());
    ctx->saved_data["fn"] = c10::IValue::make_capsule(holder);
    const variable_list list(inputs.begin(), inputs.end());
    ctx->save_for_backward(list);
    torch::NoGradGuard no_grad;
    return holder->fn(list);
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
    variable_list roots, root_grads, targets;
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (!outputs[i].requires_grad() || !grad_outputs[i].defined()) continue;
      roots.push_back(outputs[i]);
      root_grads.push_back(grad_outputs[i]);
    }
    for (const auto& d : detached)
      if (d.requires_grad()) targets.push_back(d);
    for (const auto& p : holder->params)
      if (p.requires_grad()) targets.push_back(p);
    // Gradients go back through this node (not accumulated here), so the engine delivers parameter
    // gradients once, to the usual accumulators and hooks.
    variable_list grads;
    if (!roots.empty() && !targets.empty())
      grads = torch::autograd::grad(roots, targets, root_grads, /*retain_graph=*/false, /*create_graph=*/false,
                                    /*allow_unused=*/true);
    variable_list result{torch::Tensor()};  // the holder argument
    size_t next = 0;
    for (const auto& d : detached) result.push_back(d.requires_grad() && !grads.empty() ? grads[next++] : torch::Tensor());
    for (const auto& p : holder->params)
      result.push_back(p.requires_grad() && !grads.empty() ? grads[next++] : torch::Tensor());
    return result;
  }
};
}  // namespace

variable_list checkpoint(CheckpointedFn fn, const variable_list& inputs, const variable_list& params) {
  for (const auto& t : inputs) CVX_CHECK(t.defined(), "checkpoint(): inputs must be defined tensors");
  auto holder = c10::make_intrusive<FnHolder>();
  holder->fn = std::move(fn);
  return CheckpointFunction::apply(holder, at::TensorList(inputs), at::TensorList(params));
}

}  // namespace cvx
