#include "cvx/io/hdf5.h"

#include <mutex>
#include <vector>

#include "cvx/core/checked_call.h"
#include "cvx/core/error.h"

// The library's error rendering for CVX_H5 (checked_call.h), here with the rest of HDF5's use.
namespace cvx {
namespace {
herr_t collect_hdf5_error(unsigned n, const H5E_error2_t* err, void* client) {
  auto* lines = static_cast<std::vector<std::string>*>(client);
  std::string line = err->desc != nullptr ? err->desc : "";
  if (err->func_name != nullptr) line = std::string(err->func_name) + ": " + line;
  lines->push_back(line);
  (void)n;
  return 0;
}
}  // namespace

std::string hdf5_error_stack() {
  std::vector<std::string> lines;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_hdf5_error, &lines);
  H5Eclear2(H5E_DEFAULT);
  if (lines.empty()) return "no HDF5 error details";
  std::string out;
  // The innermost (first, walking upward) entries say what actually went wrong.
  for (size_t i = 0; i < lines.size() && i < 3; ++i) {
    if (i > 0) out += " <- ";
    out += lines[i];
  }
  return out;
}

}  // namespace cvx

namespace cvx::h5 {

void silence_errors() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

Id& Id::operator=(Id&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = other.id_;
    closer_ = other.closer_;
    other.id_ = H5I_INVALID_HID;
  }
  return *this;
}

void Id::close() {
  if (id_ < 0) return;
  const hid_t id = id_;
  id_ = H5I_INVALID_HID;
  CVX_H5(closer_(id));
}

void Id::reset() noexcept {
  if (id_ >= 0 && closer_ != nullptr) closer_(id_);
  id_ = H5I_INVALID_HID;
}

Id file_id(hid_t id) { return Id(id, H5Fclose); }
Id group_id(hid_t id) { return Id(id, H5Gclose); }
Id dataset_id(hid_t id) { return Id(id, H5Dclose); }
Id dataspace_id(hid_t id) { return Id(id, H5Sclose); }
Id type_id(hid_t id) { return Id(id, H5Tclose); }
Id plist_id(hid_t id) { return Id(id, H5Pclose); }
Id attribute_id(hid_t id) { return Id(id, H5Aclose); }

Id fixed_string_type(size_t width) {
  Id type = type_id(CVX_H5(H5Tcopy(H5T_C_S1)));
  CVX_H5(H5Tset_size(type, width == 0 ? 1 : width));
  CVX_H5(H5Tset_strpad(type, H5T_STR_NULLPAD));
  return type;
}

bool has_attribute(hid_t object, const std::string& name) { return CVX_H5(H5Aexists(object, name.c_str())) > 0; }

namespace {
void write_raw_attribute(hid_t object, const std::string& name, hid_t type, const Id& space, const void* data) {
  if (has_attribute(object, name)) CVX_H5(H5Adelete(object, name.c_str()));
  Id attribute = attribute_id(CVX_H5(H5Acreate2(object, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT)));
  CVX_H5(H5Awrite(attribute, type, data));
}

Id open_attribute(hid_t object, const std::string& name) {
  CVX_CHECK_AS(FormatError, has_attribute(object, name), "attribute ", quote(name), " is missing");
  return attribute_id(CVX_H5(H5Aopen(object, name.c_str(), H5P_DEFAULT)));
}

Id scalar_space() { return dataspace_id(CVX_H5(H5Screate(H5S_SCALAR))); }
}  // namespace

void write_attribute(hid_t object, const std::string& name, const std::string& value) {
  const Id type = fixed_string_type(value.size());
  write_raw_attribute(object, name, type, scalar_space(), value.empty() ? "" : value.data());
}
void write_attribute(hid_t object, const std::string& name, int64_t value) {
  write_raw_attribute(object, name, H5T_NATIVE_INT64, scalar_space(), &value);
}
void write_attribute(hid_t object, const std::string& name, double value) {
  write_raw_attribute(object, name, H5T_NATIVE_DOUBLE, scalar_space(), &value);
}
void write_attribute(hid_t object, const std::string& name, const std::vector<int64_t>& values) {
  const hsize_t n = values.size();
  const Id space = dataspace_id(CVX_H5(H5Screate_simple(1, &n, nullptr)));
  write_raw_attribute(object, name, H5T_NATIVE_INT64, space, values.data());
}

std::string read_string_attribute(hid_t object, const std::string& name) {
  const Id attribute = open_attribute(object, name);
  const Id stored = type_id(CVX_H5(H5Aget_type(attribute)));
  CVX_CHECK_AS(FormatError, H5Tget_class(stored) == H5T_STRING && CVX_H5(H5Tis_variable_str(stored)) == 0, "attribute ",
               quote(name), " is not a fixed-size string");
  const size_t width = H5Tget_size(stored);
  std::string value(width, '\0');
  const Id memory = fixed_string_type(width);
  CVX_H5(H5Aread(attribute, memory, value.data()));
  value.resize(value.find('\0') == std::string::npos ? width : value.find('\0'));
  return value;
}

int64_t read_int_attribute(hid_t object, const std::string& name) {
  int64_t value = 0;
  CVX_H5(H5Aread(open_attribute(object, name), H5T_NATIVE_INT64, &value));
  return value;
}

double read_double_attribute(hid_t object, const std::string& name) {
  double value = 0;
  CVX_H5(H5Aread(open_attribute(object, name), H5T_NATIVE_DOUBLE, &value));
  return value;
}

std::vector<int64_t> read_ints_attribute(hid_t object, const std::string& name) {
  const Id attribute = open_attribute(object, name);
  const Id space = dataspace_id(CVX_H5(H5Aget_space(attribute)));
  const hssize_t n = CVX_H5(H5Sget_simple_extent_npoints(space));
  std::vector<int64_t> values(static_cast<size_t>(n));
  if (n > 0) CVX_H5(H5Aread(attribute, H5T_NATIVE_INT64, values.data()));
  return values;
}

std::vector<hsize_t> dataset_shape(hid_t dataset) {
  const Id space = dataspace_id(CVX_H5(H5Dget_space(dataset)));
  const int rank = CVX_H5(H5Sget_simple_extent_ndims(space));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  CVX_H5(H5Sget_simple_extent_dims(space, dims.data(), nullptr));
  return dims;
}

namespace {
// File and memory dataspaces selecting rows [row, row + count) of `dataset`.
std::pair<Id, Id> row_selection(hid_t dataset, int64_t row, int64_t count) {
  Id file_space = dataspace_id(CVX_H5(H5Dget_space(dataset)));
  const int rank = CVX_H5(H5Sget_simple_extent_ndims(file_space));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  CVX_H5(H5Sget_simple_extent_dims(file_space, dims.data(), nullptr));
  CVX_CHECK(rank >= 1 && row >= 0 && count >= 0 && static_cast<hsize_t>(row + count) <= dims[0], "rows [", row, ", ",
            row + count, ") out of range for a dataset of ", rank >= 1 ? dims[0] : 0, " rows");
  std::vector<hsize_t> start(dims.size(), 0), extent = dims;
  start[0] = static_cast<hsize_t>(row);
  extent[0] = static_cast<hsize_t>(count);
  CVX_H5(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start.data(), nullptr, extent.data(), nullptr));
  Id memory_space = dataspace_id(CVX_H5(H5Screate_simple(rank, extent.data(), nullptr)));
  return {std::move(file_space), std::move(memory_space)};
}
}  // namespace

void write_rows(hid_t dataset, hid_t memory_type, int64_t row, int64_t count, const void* buffer, hid_t transfer) {
  const auto [file_space, memory_space] = row_selection(dataset, row, count);
  CVX_H5(H5Dwrite(dataset, memory_type, memory_space, file_space, transfer, buffer));
}

void read_rows(hid_t dataset, hid_t memory_type, int64_t row, int64_t count, void* buffer, hid_t transfer) {
  const auto [file_space, memory_space] = row_selection(dataset, row, count);
  CVX_H5(H5Dread(dataset, memory_type, memory_space, file_space, transfer, buffer));
}

}  // namespace cvx::h5
