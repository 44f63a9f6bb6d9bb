#include "cvx/core/recompute.h"

#include "cvx/core/error.h"

namespace cvx {
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Generator default_generator(const torch::Device& device) {
  return at::globalContext().defaultGenerator(device.is_cuda() ? device : torch::Device(torch::kCPU));
}

struct UnitHolder : torch::CustomClassHolder {
  UnitFn fn;
  variable_list params;
  RecomputeHooks hooks;
  bool keep_activations = false;
  RngSnapshot rng;
  // keep_activations: fn's graph from the forward, its outputs and the detached inputs it starts at.
  variable_list kept_inputs, kept_outputs;
};

void call(const std::function<void()>& hook) {
  if (hook) hook();
}

struct RecomputeFunction : public torch::autograd::Function<RecomputeFunction> {
  // Inputs and parameters arrive as TensorLists: autograd only tracks tensors passed as Tensor or
  // TensorList (a std::vector would be taken for a non-tensor argument and cut the graph).
  static variable_list forward(AutogradContext* ctx, c10::intrusive_ptr<UnitHolder> holder, at::TensorList inputs,
                               at::TensorList params) {
    const variable_list list(inputs.begin(), inputs.end());
    holder->rng = RngSnapshot::capture(list.empty() ? torch::Device(torch::kCPU) : list.front().device());
    ctx->saved_data["unit"] = c10::IValue::make_capsule(holder);
    call(holder->hooks.before_forward);
    variable_list outputs;
    if (holder->keep_activations) {
      torch::AutoGradMode enable(true);
      for (const auto& t : list) holder->kept_inputs.push_back(t.detach().requires_grad_(t.requires_grad()));
      holder->kept_outputs = holder->fn(holder->kept_inputs);
      for (const auto& o : holder->kept_outputs) outputs.push_back(o.detach());
    } else {
      ctx->save_for_backward(list);
      torch::NoGradGuard no_grad;
      outputs = holder->fn(list);
    }
    call(holder->hooks.after_forward);
    return outputs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto holder = c10::static_intrusive_pointer_cast<UnitHolder>(ctx->saved_data["unit"].toCapsule());
    call(holder->hooks.before_backward);
    variable_list inputs, outputs;
    if (holder->keep_activations) {
      inputs = std::move(holder->kept_inputs);
      outputs = std::move(holder->kept_outputs);
    } else {
      for (const auto& s : ctx->get_saved_variables()) inputs.push_back(s.detach().requires_grad_(s.requires_grad()));
      // Replay the forward's random draws, then put the generators back where backward found them.
      const RngSnapshot current = holder->rng.replay();
      torch::AutoGradMode enable(true);
      outputs = holder->fn(inputs);
      current.replay();
    }
    variable_list roots, root_grads, targets;
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (!outputs[i].requires_grad() || !grad_outputs[i].defined()) continue;
      roots.push_back(outputs[i]);
      root_grads.push_back(grad_outputs[i]);
    }
    for (const auto& d : inputs)
      if (d.requires_grad()) targets.push_back(d);
    for (const auto& p : holder->params)
      if (p.requires_grad()) targets.push_back(p);
    variable_list grads;
    if (!roots.empty() && !targets.empty())
      grads = torch::autograd::grad(roots, targets, root_grads, /*retain_graph=*/false, /*create_graph=*/false,
                                    /*allow_unused=*/true);
    outputs.clear();
    roots.clear();
    variable_list result{torch::Tensor()};  // the holder argument
    size_t next = 0;
    for (const auto& d : inputs)
      result.push_back(d.requires_grad() && !grads.empty() ? grads[next++] : torch::Tensor());
    variable_list param_grads;
    for (const auto& p : holder->params)
      param_grads.push_back(p.requires_grad() && !grads.empty() ? grads[next++] : torch::Tensor());
    if (holder->hooks.on_param_grads) {
      holder->hooks.on_param_grads(param_grads);
      result.push_back(torch::Tensor());  // the anchor
    } else {
      result.insert(result.end(), param_grads.begin(), param_grads.end());
    }
    call(holder->hooks.after_backward);
    return result;
  }
};
}  // namespace

RngSnapshot RngSnapshot::capture(const torch::Device& device) {
  RngSnapshot s;
  s.device = device;
  s.cpu_state = default_generator(torch::kCPU).get_state();
  if (device.is_cuda()) s.device_state = default_generator(device).get_state();
  return s;
}

RngSnapshot RngSnapshot::replay() const {
  RngSnapshot previous = capture(device);
  default_generator(torch::kCPU).set_state(cpu_state);
  if (device_state.defined()) default_generator(device).set_state(device_state);
  return previous;
}

variable_list run_recomputed(UnitFn fn, const variable_list& inputs, const variable_list& params, RecomputeHooks hooks,
                             bool keep_activations) {
  for (const auto& t : inputs) CVX_CHECK(t.defined(), "run_recomputed(): inputs must be defined tensors");
  auto holder = c10::make_intrusive<UnitHolder>();
  holder->fn = std::move(fn);
  holder->params = params;
  holder->keep_activations = keep_activations;
  const bool grads_to_hook = static_cast<bool>(hooks.on_param_grads);
  holder->hooks = std::move(hooks);
  if (!grads_to_hook) return RecomputeFunction::apply(holder, at::TensorList(inputs), at::TensorList(params));
  // The parameters' gradients go to the hook, so they are no inputs of the node; a grad-requiring
  // anchor makes the node part of the backward pass even when no input requires grad (LoRA on a
  // frozen base: the first block's input comes from frozen embeddings).
  const variable_list anchor{torch::empty({}, torch::requires_grad())};
  return RecomputeFunction::apply(holder, at::TensorList(inputs), at::TensorList(anchor));
}

}  // namespace cvx
