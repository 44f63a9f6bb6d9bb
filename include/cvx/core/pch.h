// Precompiled header shared by the library, programs and tests: the heavy, stable headers only.
#pragma once
#include <torch/torch.h>
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>
