// Doubles written for a program to read back: LoRA file metadata, resolved INI files, --help.
#pragma once
#include <string>

namespace cvx {

// The shortest "%g" rendering that reads back (strtod) to exactly `value`: "0.1", "2e-05", "64",
// "0.30000000000000004". Round numbers with fewer significant digits than integer digits take the
// exponent form ("1e+02" for 100), as %g does; LoRA files carry this text, so it stays byte-stable.
std::string format_double(double value);

}  // namespace cvx
