// One error family for cvx, and the CVX_CHECK macro that records where a check failed.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace cvx {

// Base of every error cvx throws. what() is one line a user can act on; where() is the
// source location of the failed check (kept separate so messages stay readable).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, const char* file = nullptr, int line = 0);
  const std::string& message() const { return message_; }
  // "src/io/safetensors.cpp:123", or empty.
  const std::string& where() const { return where_; }

 private:
  std::string message_;
  std::string where_;
};

// Bad user input: options, INI files, list files.
class ConfigError : public Error {
  using Error::Error;
};
// A file that exists but is malformed (safetensors, JSON, HDF5 store, video).
class FormatError : public Error {
  using Error::Error;
};
// The operating system or a library failed (open, mmap, MPI, HDF5, FFmpeg, NCCL, CUDA).
class SystemError : public Error {
  using Error::Error;
};

// Renders text from outside the program (a tensor name, a path, a parser's message) for an error
// message: control characters escaped and very long text shortened, so what() stays one line.
std::string one_line(std::string_view text, size_t max_length = 200);
// one_line() in double quotes. (Not "quoted": ADL would pick std::quoted for std::string arguments.)
std::string quote(std::string_view text, size_t max_length = 200);

namespace detail {
inline void append(std::ostringstream&) {}
template <class T, class... Rest>
void append(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  append(os, rest...);
}
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  append(os, args...);
  return os.str();
}
// Strips the build's absolute source prefix so locations read "src/io/x.cpp:12".
const char* short_path(const char* file);
}  // namespace detail

}  // namespace cvx

// Throws ErrorType with the streamed message and the source location.
#define CVX_THROW_AS(ErrorType, ...) \
  throw ErrorType(::cvx::detail::concat(__VA_ARGS__), ::cvx::detail::short_path(__FILE__), __LINE__)
#define CVX_THROW(...) CVX_THROW_AS(::cvx::Error, __VA_ARGS__)

// CVX_CHECK(cond, "message parts", value, ...): throws cvx::Error naming file:line when cond is false.
#define CVX_CHECK(cond, ...)  \
  do {                        \
    if (!(cond)) {            \
      CVX_THROW(__VA_ARGS__); \
    }                         \
  } while (0)
#define CVX_CHECK_AS(ErrorType, cond, ...)  \
  do {                                      \
    if (!(cond)) {                          \
      CVX_THROW_AS(ErrorType, __VA_ARGS__); \
    }                                       \
  } while (0)
