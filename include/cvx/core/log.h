// Logging through Boost.Log: every record carries the MPI rank. By default the console shows
// rank 0 (plus errors from every rank); --log_all_ranks shows every rank.
#pragma once
#include <boost/log/sources/record_ostream.hpp>
#include <boost/log/sources/severity_logger.hpp>

#include <filesystem>
#include <string>

namespace cvx::log {

enum class Level { trace = 0, debug, info, warning, error };

// "trace" | "debug" | "info" | "warning" | "error"; throws cvx::ConfigError otherwise.
Level parse_level(const std::string& name);
const char* level_name(Level level);

struct LogSettings {
  int rank = 0;
  int world_size = 1;
  bool all_ranks = false;  // console (and files) from every rank, not only rank 0
  Level level = Level::info;
};

// Sets up the console sink; safe to call again to change settings.
void init(const LogSettings& settings);
// Adds a file sink in the run folder: rank 0 writes `dir/log.txt`; with all_ranks, rank r > 0
// writes `dir/logs/rank{r}.txt`.
void add_run_folder(const std::filesystem::path& dir);
void flush();

// True when stdout and stderr are both terminals: a person watches the console. Under mpirun a
// rank's stdout is a pseudo-terminal even when mpirun's own output goes to a pipe or a file, but its
// stderr is not, so mpirun jobs, Slurm, pipes and tests all count as not interactive.
bool console_is_interactive();
// One line at the bottom of the console, redrawn in place (`\r`): the next show_status replaces it,
// the next console record erases it first. Console only: log files never see it.
void show_status(const std::string& line);

using Logger = boost::log::sources::severity_logger_mt<Level>;
Logger& logger();
// Records that go to the log files but not to the console (where a status line shows them).
Logger& file_only_logger();

}  // namespace cvx::log

#define CVX_LOG(lvl) BOOST_LOG_SEV(::cvx::log::logger(), ::cvx::log::Level::lvl)
#define CVX_TRACE CVX_LOG(trace)
#define CVX_DEBUG CVX_LOG(debug)
#define CVX_INFO CVX_LOG(info)
#define CVX_WARN CVX_LOG(warning)
#define CVX_ERROR CVX_LOG(error)
#define CVX_INFO_FILE_ONLY BOOST_LOG_SEV(::cvx::log::file_only_logger(), ::cvx::log::Level::info)
