#include "golden_util.h"

#include <fstream>
#include <regex>
#include <sstream>

#include "cvx/io/json_file.h"
#include "test_util.h"

namespace cvx::test {

torch::Tensor GoldenCase::tensor(const std::string& tensor_name) const {
  if (!data || !data->contains(tensor_name))
    throw std::runtime_error("golden case " + name + " has no tensor " + tensor_name);
  return data->tensor(tensor_name).clone();
}

bool GoldenCase::has(const std::string& tensor_name) const { return data && data->contains(tensor_name); }

std::vector<GoldenCase> golden_cases(const std::string& prefix) {
  std::vector<GoldenCase> out;
  const auto dir = golden_dir();
  if (!dir) return out;
  const auto manifest = read_json_file(*dir / "manifest.json");
  for (const auto& c : manifest.at("cases")) {
    const std::string name = c.get<std::string>();
    if (name != prefix && name.rfind(prefix + "/", 0) != 0) continue;
    GoldenCase g;
    g.name = name;
    g.dir = *dir / name;
    if (std::filesystem::exists(g.dir / "meta.json")) g.meta = read_json_file(g.dir / "meta.json");
    if (std::filesystem::exists(g.dir / "data.safetensors")) g.data = SafetensorsFile::open(g.dir / "data.safetensors");
    out.push_back(std::move(g));
  }
  return out;
}

double golden_atol(const std::string& case_name, const std::string& quantity, double fallback) {
  const auto dir = golden_dir();
  if (!dir) return fallback;
  std::ifstream in(*dir / "README.md");
  std::string line;
  // Rows look like: | transformer/2b | output | 2.96e-07 | 2.04 | 1e-5 |
  const std::regex row(R"(^\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|\s*[^|]+\|\s*[^|]+\|\s*([0-9.eE+-]+)\s*\|\s*$)");
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_match(line, m, row) && m[1] == case_name && m[2] == quantity) return std::stod(m[3]);
  }
  return fallback;
}

::testing::AssertionResult all_close(const torch::Tensor& actual, const torch::Tensor& expected, double atol,
                                     double rtol) {
  if (actual.sizes() != expected.sizes()) {
    std::ostringstream os;
    os << "shape " << actual.sizes() << " vs expected " << expected.sizes();
    return ::testing::AssertionFailure() << os.str();
  }
  const auto a = actual.detach().to(torch::kCPU, torch::kFloat64);
  const auto e = expected.detach().to(torch::kCPU, torch::kFloat64);
  const auto diff = (a - e).abs();
  const auto excess = diff - (atol + rtol * e.abs());
  const int64_t worst = excess.flatten().argmax().item<int64_t>();
  const double worst_excess = excess.flatten()[worst].item<double>();
  if (!(worst_excess <= 0) || !torch::isfinite(a).all().item<bool>()) {
    std::ostringstream os;
    os << "max |diff| " << diff.max().item<double>() << " (atol " << atol << ", rtol " << rtol
       << "); worst at flat index " << worst << ": got " << a.flatten()[worst].item<double>() << ", expected "
       << e.flatten()[worst].item<double>();
    return ::testing::AssertionFailure() << os.str();
  }
  return ::testing::AssertionSuccess() << "max |diff| " << diff.max().item<double>();
}

}  // namespace cvx::test
