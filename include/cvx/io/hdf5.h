// Small RAII and attribute helpers over the HDF5 C API (the C++ API is not thread- or MPI-aware and
// is not shipped with every parallel build). Every call goes through CVX_H5.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cvx::h5 {

// Turns off HDF5's printing of its error stack to stderr (CVX_H5 reports it instead). Idempotent.
void silence_errors();

// An owned hid_t, closed with the function matching its kind (file, group, dataset, ...).
class Id {
 public:
  using Closer = herr_t (*)(hid_t);
  Id() = default;
  Id(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  Id(Id&& other) noexcept : id_(other.id_), closer_(other.closer_) { other.id_ = H5I_INVALID_HID; }
  Id& operator=(Id&& other) noexcept;
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  ~Id() { reset(); }
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }  // NOLINT: reads naturally at H5* call sites
  bool valid() const { return id_ >= 0; }
  // Closes now; a failure throws (the destructor swallows it).
  void close();
  void reset() noexcept;

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

Id file_id(hid_t id);
Id group_id(hid_t id);
Id dataset_id(hid_t id);
Id dataspace_id(hid_t id);
Id type_id(hid_t id);
Id plist_id(hid_t id);
Id attribute_id(hid_t id);

// A fixed-size, NUL-padded string type of `width` bytes (fixed, not variable-length: parallel HDF5
// can write fixed-size raw data independently, but a variable-length string needs the global heap).
Id fixed_string_type(size_t width);

bool has_attribute(hid_t object, const std::string& name);
void write_attribute(hid_t object, const std::string& name, const std::string& value);
void write_attribute(hid_t object, const std::string& name, int64_t value);
void write_attribute(hid_t object, const std::string& name, double value);
void write_attribute(hid_t object, const std::string& name, const std::vector<int64_t>& values);
std::string read_string_attribute(hid_t object, const std::string& name);
int64_t read_int_attribute(hid_t object, const std::string& name);
double read_double_attribute(hid_t object, const std::string& name);
std::vector<int64_t> read_ints_attribute(hid_t object, const std::string& name);

// The extents of a dataset.
std::vector<hsize_t> dataset_shape(hid_t dataset);

// Writes / reads rows [row, row + count) along the first dimension of `dataset`, every other
// dimension whole; `buffer` holds them contiguously in `memory_type`.
void write_rows(hid_t dataset, hid_t memory_type, int64_t row, int64_t count, const void* buffer, hid_t transfer);
void read_rows(hid_t dataset, hid_t memory_type, int64_t row, int64_t count, void* buffer, hid_t transfer);

}  // namespace cvx::h5
