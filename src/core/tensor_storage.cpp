#include "cvx/core/tensor_storage.h"

#include "cvx/core/error.h"

namespace cvx {

torch::Tensor unmaterialized_tensor(at::IntArrayRef shape, const torch::TensorOptions& options) {
  // empty({0}) allocates nothing on any device; the sizes are then set without growing storage.
  auto tensor = torch::empty({0}, options);
  tensor.unsafeGetTensorImpl()->set_sizes_contiguous(shape);
  return tensor;
}

bool is_materialized(const torch::Tensor& tensor) {
  if (!tensor.defined()) return false;
  if (!tensor.has_storage()) return true;
  int64_t reach = 0;  // elements past the storage offset the tensor touches
  if (tensor.numel() > 0) {
    reach = 1;
    for (int64_t d = 0; d < tensor.dim(); ++d) reach += (tensor.size(d) - 1) * tensor.stride(d);
  }
  const size_t needed = static_cast<size_t>(tensor.storage_offset() + reach) * tensor.element_size();
  return tensor.storage().nbytes() >= needed && (needed == 0 || tensor.storage().data() != nullptr);
}

void free_storage(const torch::Tensor& tensor) {
  auto* storage = tensor.storage().unsafeGetStorageImpl();
  storage->set_data_ptr_noswap(at::DataPtr(nullptr, tensor.device()));
  storage->set_nbytes(0);
}

void allocate_storage(const torch::Tensor& tensor, size_t nbytes) {
  auto* storage = tensor.storage().unsafeGetStorageImpl();
  if (storage->nbytes() == nbytes && (nbytes == 0 || storage->data() != nullptr)) return;
  CVX_CHECK(storage->allocator() != nullptr, "allocate_storage: the tensor's storage has no allocator");
  storage->set_data_ptr_noswap(storage->allocator()->allocate(nbytes));
  storage->set_nbytes(nbytes);
}

}  // namespace cvx
