// libtorch's fused AdamW kernel for one flat buffer, which tch 0.24 does not bind: on a GPU one
// multi-tensor-apply kernel reads the parameters, gradient and both moments once and writes three
// of them once, where the same update as libtorch ops is nine passes. `found_inf` (a one-element
// float tensor on the buffers' device, 1 = skip) lets the kernel skip the update on a verdict the
// device computed, without the host waiting for it first. tch's `C_tensor *` is an `at::Tensor *`
// (torch-sys's torch_api.h). Returns NULL, or libtorch's error message (malloc'd; the caller frees
// it).
#include <ATen/core/Tensor.h>
#include <ATen/ops/_fused_adamw.h>

#include <cstring>
#include <exception>
#include <optional>

extern "C" char *dp_bench_fused_adamw(at::Tensor *params, at::Tensor *grad, at::Tensor *exp_avg,
                                      at::Tensor *exp_avg_sq, at::Tensor *step,
                                      at::Tensor *found_inf, double lr, double beta1, double beta2,
                                      double weight_decay, double eps) {
  try {
    std::optional<at::Tensor> skip;
    if (found_inf != nullptr) skip = *found_inf;
    at::_fused_adamw_({*params}, {*grad}, {*exp_avg}, {*exp_avg_sq}, /*max_exp_avg_sqs=*/{},
                      {*step}, lr, beta1, beta2, weight_decay, eps, /*amsgrad=*/false,
                      /*maximize=*/false, /*grad_scale=*/std::nullopt, skip);
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  }
}
