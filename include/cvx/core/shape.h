// Shapes in messages: "[2, 3, 4]".
#pragma once
#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <string>

namespace cvx {
std::string shape_string(c10::IntArrayRef shape);
}  // namespace cvx
