// Doubles written for a program to read back: LoRA file metadata, resolved INI files, --help.
#pragma once
#include <string>

namespace cvx {

// The shortest "%g" rendering that reads back (strtod) to exactly `value`: "0.1", "2e-05", "64",
// "0.30000000000000004"; whole numbers below 1e16 in plain digits ("100", not %g's "1e+02").
std::string format_double(double value);

}  // namespace cvx
