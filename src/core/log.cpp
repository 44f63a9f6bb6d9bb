#include "cvx/core/log.h"

#include <boost/core/null_deleter.hpp>
#include <boost/log/attributes/constant.hpp>
#include <boost/log/core.hpp>
#include <boost/log/expressions.hpp>
#include <boost/log/sinks/sync_frontend.hpp>
#include <boost/log/sinks/text_ostream_backend.hpp>
#include <boost/log/support/date_time.hpp>
#include <boost/log/utility/setup/common_attributes.hpp>
#include <boost/smart_ptr/make_shared_object.hpp>

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <mutex>

#include "cvx/core/error.h"

namespace cvx::log {
namespace {
namespace bl = boost::log;
namespace expr = boost::log::expressions;
using TextSink = bl::sinks::synchronous_sink<bl::sinks::text_ostream_backend>;

BOOST_LOG_ATTRIBUTE_KEYWORD(severity_kw, "Severity", Level)
constexpr const char* kFileOnly = "FileOnly";

struct State {
  std::mutex mutex;
  LogSettings settings;
  boost::shared_ptr<TextSink> console;
  std::vector<boost::shared_ptr<TextSink>> files;
  bool initialised = false;
  std::atomic<bool> status_shown{false};  // a status line is on the console, without newline
};
State& state() {
  static State s;
  return s;
}

void format_record(const bl::record_view& rec, bl::formatting_ostream& out) {
  const auto stamp = bl::extract<boost::posix_time::ptime>("TimeStamp", rec);
  if (stamp) {
    std::string text = boost::posix_time::to_iso_extended_string(*stamp).substr(0, 23);  // ms precision
    if (text.size() > 10) text[10] = ' ';
    out << text << ' ';
  }
  const auto rank = bl::extract<int>("Rank", rec);
  out << "[r" << (rank ? *rank : 0) << "] ";
  const auto level = bl::extract<Level>("Severity", rec);
  const Level lv = level ? *level : Level::info;
  if (lv != Level::info) out << level_name(lv) << ": ";
  out << rec[expr::smessage];
}

// The console's records first erase a status line (show_status) standing on the last line.
void format_console_record(const bl::record_view& rec, bl::formatting_ostream& out) {
  if (state().status_shown.exchange(false)) out << "\r\033[K";
  format_record(rec, out);
}
}  // namespace

Level parse_level(const std::string& name) {
  if (name == "trace") return Level::trace;
  if (name == "debug") return Level::debug;
  if (name == "info") return Level::info;
  if (name == "warning" || name == "warn") return Level::warning;
  if (name == "error") return Level::error;
  CVX_THROW_AS(ConfigError, "unknown log level '", name, "' (expected trace, debug, info, warning or error)");
}

const char* level_name(Level level) {
  switch (level) {
    case Level::trace: return "TRACE";
    case Level::debug: return "DEBUG";
    case Level::info: return "INFO";
    case Level::warning: return "WARNING";
    case Level::error: return "ERROR";
  }
  return "?";
}

Logger& logger() {
  static Logger instance;
  return instance;
}

void init(const LogSettings& settings) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  auto core = bl::core::get();
  if (!s.initialised) {
    bl::add_common_attributes();
    s.initialised = true;
  }
  s.settings = settings;
  core->add_global_attribute("Rank", bl::attributes::constant<int>(settings.rank));
  if (s.console) core->remove_sink(s.console);
  auto backend = boost::make_shared<bl::sinks::text_ostream_backend>();
  backend->add_stream(boost::shared_ptr<std::ostream>(&std::cout, boost::null_deleter()));
  backend->auto_flush(true);
  s.console = boost::make_shared<TextSink>(backend);
  s.console->set_formatter(&format_console_record);
  const Level min_level = settings.level;
  if (settings.all_ranks || settings.rank == 0) {
    s.console->set_filter(severity_kw >= min_level && !expr::has_attr<bool>(kFileOnly));
  } else {
    // Other ranks stay quiet on the console except for errors: a failing rank must say why.
    s.console->set_filter(severity_kw >= Level::error && !expr::has_attr<bool>(kFileOnly));
  }
  core->add_sink(s.console);
}

void add_run_folder(const std::filesystem::path& dir) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  std::filesystem::path file;
  if (s.settings.rank == 0) {
    file = dir / "log.txt";
  } else if (s.settings.all_ranks) {
    file = dir / "logs" / ("rank" + std::to_string(s.settings.rank) + ".txt");
  } else {
    return;
  }
  std::error_code ec;
  std::filesystem::create_directories(file.parent_path(), ec);
  auto stream = boost::make_shared<std::ofstream>(file, std::ios::app);
  CVX_CHECK_AS(SystemError, stream->good(), "cannot open log file ", file.string(), " for writing");
  auto backend = boost::make_shared<bl::sinks::text_ostream_backend>();
  backend->add_stream(stream);
  backend->auto_flush(true);
  auto sink = boost::make_shared<TextSink>(backend);
  sink->set_formatter(&format_record);
  sink->set_filter(severity_kw >= s.settings.level);
  bl::core::get()->add_sink(sink);
  s.files.push_back(sink);
}

void flush() { bl::core::get()->flush(); }

bool console_is_interactive() {
  const char* term = std::getenv("TERM");
  return isatty(STDOUT_FILENO) == 1 && isatty(STDERR_FILENO) == 1 && !(term != nullptr && std::string(term) == "dumb");
}

void show_status(const std::string& line) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.console) return;
  // Holding the console backend serialises the line with records being written.
  auto backend = s.console->locked_backend();
  std::cout << '\r' << line << "\033[K" << std::flush;
  s.status_shown = true;
}

Logger& file_only_logger() {
  static Logger instance;
  static const bool tagged = [] {
    instance.add_attribute(kFileOnly, bl::attributes::constant<bool>(true));
    return true;
  }();
  (void)tagged;
  return instance;
}

}  // namespace cvx::log
