#include "cvx/core/options.h"

#include "cvx/core/format_double.h"
#include "cvx/io/atomic_file.h"

#include <boost/program_options.hpp>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

namespace cvx {
namespace po = boost::program_options;

namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

bool parse_bool(const std::string& text) {
  std::string t;
  for (char c : trim(text)) t += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (t == "1" || t == "true" || t == "yes" || t == "on") return true;
  if (t == "0" || t == "false" || t == "no" || t == "off") return false;
  throw std::invalid_argument("expected a boolean (true/false, yes/no, on/off, 1/0)");
}

int64_t parse_int(const std::string& text) {
  const std::string t = trim(text);
  if (t.empty()) throw std::invalid_argument("expected an integer, got an empty value");
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(t.c_str(), &end, 10);
  if (end == t.c_str() || *end != '\0') throw std::invalid_argument("expected an integer");
  if (errno == ERANGE) throw std::invalid_argument("integer out of range");
  return v;
}

double parse_double(const std::string& text) {
  const std::string t = trim(text);
  if (t.empty()) throw std::invalid_argument("expected a number, got an empty value");
  char* end = nullptr;
  const double v = std::strtod(t.c_str(), &end);
  if (end == t.c_str() || *end != '\0') throw std::invalid_argument("expected a number");
  if (!std::isfinite(v)) throw std::invalid_argument("expected a finite number");
  return v;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::string item;
  for (char c : text) {
    if (c == ',' || c == ' ' || c == '\t') {
      if (!item.empty()) out.push_back(item);
      item.clear();
    } else {
      item += c;
    }
  }
  if (!item.empty()) out.push_back(item);
  return out;
}

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

// The full name of the option `option` sets: its own, or for an alias the one it stands for.
std::string canonical_name(const OptionInfo& option) {
  if (option.alias_of.empty()) return option.full_name();
  return option.section.empty() ? option.alias_of : option.section + "." + option.alias_of;
}

// 1-based line of the n-th (0-based) occurrence of `full_name` ("section.key" or "key") in an INI
// file, 0 if not found.
size_t find_ini_line(const std::string& file, const std::string& full_name, size_t occurrence = 0) {
  std::ifstream in(file);
  std::string line, section;
  size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    const std::string t = trim(line.substr(0, line.find('#')));
    if (t.empty()) continue;
    if (t.front() == '[' && t.back() == ']') {
      section = trim(t.substr(1, t.size() - 2));
      continue;
    }
    const std::string key = trim(t.substr(0, t.find('=')));
    if ((section.empty() ? key : section + "." + key) == full_name && occurrence-- == 0) return number;
  }
  return 0;
}
}  // namespace

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// ------------------------------------------------------------------ OptionVisitor

void OptionVisitor::add(OptionInfo info) {
  info.section = section_;
  info.default_value = info.get();
  for (const auto& existing : out_) {
    CVX_CHECK(existing.full_name() != info.full_name(), "option ", info.full_name(), " registered twice");
  }
  out_.push_back(std::move(info));
}

void OptionVisitor::add(const char* key, const char* help, const char* type, std::function<std::string()> get,
                        std::function<void(const std::string&)> set, std::vector<std::string> choices) {
  add({"", key, help, type, std::move(choices), "", std::move(get), std::move(set), /*alias_of=*/""});
}

void OptionVisitor::operator()(const char* key, bool& value, const char* help) {
  add(
      key, help, "bool", [&value] { return std::string(value ? "true" : "false"); },
      [&value](const std::string& s) { value = parse_bool(s); });
}

void OptionVisitor::operator()(const char* key, int& value, const char* help) {
  add(
      key, help, "int", [&value] { return std::to_string(value); },
      [&value](const std::string& s) {
        const int64_t v = parse_int(s);
        if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
          throw std::invalid_argument("integer out of range");
        value = static_cast<int>(v);
      });
}

void OptionVisitor::operator()(const char* key, int64_t& value, const char* help) {
  add(
      key, help, "int", [&value] { return std::to_string(value); },
      [&value](const std::string& s) { value = parse_int(s); });
}

void OptionVisitor::operator()(const char* key, double& value, const char* help) {
  add(
      key, help, "float", [&value] { return format_double(value); },
      [&value](const std::string& s) { value = parse_double(s); });
}

void OptionVisitor::operator()(const char* key, float& value, const char* help) {
  add(
      key, help, "float", [&value] { return format_double(value); },
      [&value](const std::string& s) { value = static_cast<float>(parse_double(s)); });
}

void OptionVisitor::operator()(const char* key, std::string& value, const char* help) {
  add(
      key, help, "string", [&value] { return value; }, [&value](const std::string& s) { value = trim(s); });
}

void OptionVisitor::operator()(const char* key, std::vector<std::string>& value, const char* help) {
  add(
      key, help, "list", [&value] { return join(value, ","); },
      [&value](const std::string& s) { value = split_list(s); });
}

void OptionVisitor::operator()(const char* key, std::vector<int64_t>& value, const char* help) {
  add(
      key, help, "int list",
      [&value] {
        std::vector<std::string> items;
        for (auto v : value) items.push_back(std::to_string(v));
        return join(items, ",");
      },
      [&value](const std::string& s) {
        std::vector<int64_t> parsed;
        for (const auto& item : split_list(s)) parsed.push_back(parse_int(item));
        value = parsed;
      });
}

void OptionVisitor::alias(const char* alias, const char* key) {
  const OptionInfo* target = nullptr;
  for (const auto& existing : out_)
    if (existing.section == section_ && existing.key == key) target = &existing;
  CVX_CHECK(target != nullptr, "alias ", alias, " names option ", key, ", which is not registered before it");
  OptionInfo info = *target;
  info.key = alias;
  info.help = std::string("alias of ") + key;
  info.alias_of = key;
  add(std::move(info));
}

void OptionVisitor::choice(const char* key, std::string& value, std::vector<std::string> choices, const char* help) {
  const auto allowed = choices;
  add(
      key, help, "string", [&value] { return value; },
      [&value, allowed](const std::string& s) {
        const std::string t = trim(s);
        if (std::find(allowed.begin(), allowed.end(), t) == allowed.end())
          throw std::invalid_argument("expected one of: " + join(allowed, ", "));
        value = t;
      },
      std::move(choices));
}

// ------------------------------------------------------------------ Options

Options::Options(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)) {}

Options& Options::foreign_sections(std::vector<std::string> names) {
  foreign_sections_ = std::move(names);
  return *this;
}

Options& Options::positional(const std::string& name, const std::string& help, std::vector<std::string>* out) {
  positional_name_ = name;
  positional_help_ = help;
  positional_out_ = out;
  return *this;
}

OptionInfo* Options::find(const std::string& full_name) {
  for (auto& o : options_)
    if (o.full_name() == full_name) return &o;
  return nullptr;
}

bool Options::was_set(const std::string& full_name) const {
  return std::find(set_.begin(), set_.end(), full_name) != set_.end();
}

std::string Options::suggestion_for(const std::string& unknown) const {
  // The same key in another section is the most likely mistake; otherwise the nearest name.
  const auto dot = unknown.rfind('.');
  const std::string bare = dot == std::string::npos ? unknown : unknown.substr(dot + 1);
  for (const auto& o : options_)
    if (o.key == bare) return o.full_name();
  std::string best;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (const auto& o : options_) {
    for (const std::string& candidate : {o.full_name(), o.key}) {
      const size_t d = edit_distance(candidate == o.key ? bare : unknown, candidate);
      if (d < best_distance) {
        best_distance = d;
        best = o.full_name();
      }
    }
  }
  const size_t limit = std::max<size_t>(2, bare.size() / 3);
  return best_distance <= limit ? best : "";
}

void Options::apply(OptionInfo& option, const std::string& value, const std::string& origin) {
  try {
    option.set(value);
  } catch (const std::invalid_argument& e) {
    std::string message = "invalid value '" + value + "' for " + option.full_name() + " (" + origin + "): " + e.what();
    CVX_THROW_AS(ConfigError, message);
  }
  // An alias counts as setting the option it names.
  const std::string name = canonical_name(option);
  if (!was_set(name)) set_.push_back(name);
}

void Options::apply_ini(const std::string& file) {
  std::ifstream in(file);
  CVX_CHECK_AS(ConfigError, in.good(), "cannot read config file ", file, " (given with --config)");
  po::options_description desc;
  for (const auto& o : options_) desc.add_options()(o.full_name().c_str(), po::value<std::string>());
  po::parsed_options parsed(&desc);
  try {
    parsed = po::parse_config_file(in, desc, /*allow_unregistered=*/true);
  } catch (const po::error& e) {
    CVX_THROW_AS(ConfigError, "cannot parse config file ", file, ": ", e.what(),
                 " (expected INI: [section] lines and key = value lines; # starts a comment)");
  }
  std::map<std::string, size_t> first_line;           // by key as written
  std::map<std::string, std::string> canonical_seen;  // option (alias resolved) -> key as written first
  for (const auto& opt : parsed.options) {
    const size_t line = find_ini_line(file, opt.string_key, first_line.count(opt.string_key));
    const std::string where = file + (line ? ":" + std::to_string(line) : "");
    if (opt.unregistered) {
      const auto dot_pos = opt.string_key.find('.');
      if (dot_pos != std::string::npos &&
          std::count(foreign_sections_.begin(), foreign_sections_.end(), opt.string_key.substr(0, dot_pos)))
        continue;  // another cvx program's section of a shared experiment file
      const std::string suggestion = suggestion_for(opt.string_key);
      const auto dot = opt.string_key.rfind('.');
      const std::string shown = dot == std::string::npos ? "'" + opt.string_key + "' (top level)"
                                                         : "'" + opt.string_key.substr(dot + 1) + "' in section [" +
                                                               opt.string_key.substr(0, dot) + "]";
      CVX_THROW_AS(ConfigError, "unknown key ", shown, " in config file ", where,
                   suggestion.empty() ? std::string("; see --help for the known options")
                                      : "; did you mean '" + suggestion + "'?");
    }
    CVX_CHECK_AS(ConfigError, !first_line.count(opt.string_key), "key ", opt.string_key,
                 " is set twice in config file ", file, " (lines ", first_line[opt.string_key], " and ", line, ")");
    first_line[opt.string_key] = line;
    OptionInfo& option = *find(opt.string_key);
    // An alias and the name it stands for in one file would silently let the later line win.
    const std::string canonical = canonical_name(option);
    const auto seen = canonical_seen.find(canonical);
    CVX_CHECK_AS(ConfigError, seen == canonical_seen.end(), "keys ", seen->second, " (line ", first_line[seen->second],
                 ") and ", opt.string_key, " (line ", line, ") of config file ", file, " set the same option ",
                 canonical, " (one is an alias of the other); keep one of them");
    canonical_seen[canonical] = opt.string_key;
    apply(option, opt.value.empty() ? "" : opt.value.front(), "config file " + where);
  }
}

Options::Outcome Options::parse(int argc, char** argv) {
  // Keys unique across sections may be written without their section on the command line.
  std::map<std::string, std::vector<std::string>> by_key;
  for (const auto& o : options_) by_key[o.key].push_back(o.full_name());

  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) == 0 && arg.size() > 2) {
      const auto eq = arg.find('=');
      const std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
      const std::string rest = eq == std::string::npos ? "" : arg.substr(eq);
      if (name.find('.') == std::string::npos && name != "help" && name != "config") {
        const auto it = by_key.find(name);
        if (it != by_key.end() && it->second.size() > 1 && !find(name)) {
          CVX_THROW_AS(ConfigError, "option --", name, " is ambiguous: it exists as --", join(it->second, ", --"),
                       "; write the section too");
        }
        if (it != by_key.end() && it->second.size() == 1) arg = "--" + it->second.front() + rest;
      }
      // "--flag false": a bool option takes the next word when it is a boolean literal (a bare
      // "--flag" means true). Without positional arguments any next word that is not an option is
      // the flag's value, so "--flag maybe" is refused as a bad value of that flag instead of
      // turning the flag on and leaving a stray word.
      const std::string full =
          arg.substr(2, arg.find('=') == std::string::npos ? std::string::npos : arg.find('=') - 2);
      const OptionInfo* option = find(full);
      if (option && option->type == "bool" && eq == std::string::npos && i + 1 < argc) {
        const std::string next = argv[i + 1];
        bool literal = true;
        try {
          parse_bool(next);
        } catch (const std::invalid_argument&) {
          literal = false;
        }
        if (literal || (positional_out_ == nullptr && next.rfind("-", 0) != 0)) arg += "=" + std::string(argv[++i]);
      }
    }
    args.push_back(arg);
  }

  po::options_description desc;
  desc.add_options()("help,h", "")("config", po::value<std::string>());
  for (const auto& o : options_) {
    auto* value = po::value<std::string>();
    if (o.type == "bool") value->implicit_value("true");
    desc.add_options()(o.full_name().c_str(), value);
  }
  po::variables_map vm;
  po::parsed_options parsed(&desc);
  try {
    const int style = po::command_line_style::default_style & ~po::command_line_style::allow_guessing;
    parsed = po::command_line_parser(args).options(desc).style(style).allow_unregistered().run();
  } catch (const po::error& e) {
    CVX_THROW_AS(ConfigError, "command line: ", e.what(), " (see --help)");
  }
  std::vector<std::pair<std::string, std::string>> cli_values;
  std::vector<std::string> positionals;
  bool help = false;
  for (const auto& opt : parsed.options) {
    if (opt.unregistered || opt.position_key >= 0) {
      const std::string token = opt.original_tokens.empty() ? opt.string_key : opt.original_tokens.front();
      if (opt.position_key >= 0 || token.rfind("-", 0) != 0) {
        positionals.push_back(token);
        continue;
      }
      const std::string name =
          token.substr(token.find_first_not_of('-'), token.find('=') - token.find_first_not_of('-'));
      const std::string suggestion = suggestion_for(name);
      CVX_THROW_AS(ConfigError, "unknown option ", token, " on the command line",
                   suggestion.empty() ? std::string("; see --help") : "; did you mean --" + suggestion + "?");
    }
    if (opt.string_key == "help") {
      help = true;
    } else if (opt.string_key == "config") {
      CVX_CHECK_AS(ConfigError, config_file_.empty(), "--config given twice");
      config_file_ = opt.value.front();
    } else {
      // A bare bool flag arrives without a value (its implicit value applies only when stored).
      const OptionInfo* option = find(opt.string_key);
      const std::string fallback = option && option->type == "bool" ? "true" : "";
      cli_values.emplace_back(opt.string_key, opt.value.empty() ? fallback : opt.value.front());
    }
  }
  if (help) return Outcome::help_shown;
  if (!positionals.empty()) {
    CVX_CHECK_AS(ConfigError, positional_out_ != nullptr, "unexpected argument '", positionals.front(),
                 "' (options are written --name value; see --help)");
    *positional_out_ = positionals;
  }
  if (!config_file_.empty()) apply_ini(config_file_);
  for (const auto& [name, value] : cli_values) apply(*find(name), value, "command line");
  for (const auto& section : sections_) {
    try {
      section.validate();
    } catch (const ConfigError& e) {
      const std::string scope = section.name.empty() ? "" : "[" + section.name + "] ";
      throw ConfigError("invalid configuration " + scope + e.message() +
                            (config_file_.empty() ? "" : " (config file " + config_file_ + ")"),
                        nullptr, 0);
    }
  }
  return Outcome::run;
}

std::vector<const Options::Section*> Options::ordered_sections() const {
  // Top-level keys must come before any [section] line of an INI file.
  std::vector<const Section*> out;
  for (const auto& s : sections_)
    if (s.name.empty()) out.push_back(&s);
  for (const auto& s : sections_)
    if (!s.name.empty()) out.push_back(&s);
  // A section added by several structs is listed once.
  std::vector<const Section*> unique;
  for (const auto* s : out) {
    bool seen = false;
    for (const auto* u : unique) seen = seen || u->name == s->name;
    if (!seen) unique.push_back(s);
  }
  return unique;
}

std::string Options::help_text() const {
  std::ostringstream os;
  os << program_ << ": " << summary_ << "\n\n"
     << "Usage: " << program_ << " [--config FILE.ini] [--section.key VALUE ...]"
     << (positional_name_.empty() ? "" : " " + positional_name_) << "\n"
     << "Options come from an INI file (\"[section]\" then \"key = value\"; # starts a comment) and the command\n"
     << "line, which wins. A key that exists in one section only may be given without it (--key VALUE).\n\n"
     << "  --help                 show this help and exit\n"
     << "  --config FILE          INI file with the options below\n";
  if (!positional_name_.empty()) os << "  " << positional_name_ << "  " << positional_help_ << "\n";
  for (const Section* s : ordered_sections()) {
    const Section& section = *s;
    os << "\n" << (section.name.empty() ? "general" : "[" + section.name + "]");
    if (!section.help.empty()) os << "  " << section.help;
    os << "\n";
    for (const auto& o : options_) {
      if (o.section != section.name) continue;
      std::string shown_default = o.default_value.empty() ? "\"\"" : o.default_value;
      os << "  --" << o.full_name() << " <" << o.type << ">  (default: " << shown_default << ")\n"
         << "        " << o.help;
      if (!o.choices.empty()) os << " [" << join(o.choices, " | ") << "]";
      os << "\n";
    }
  }
  return os.str();
}

std::string Options::to_ini() const {
  std::ostringstream os;
  os << "# resolved configuration of " << program_ << " (usable with --config)\n";
  for (const Section* s : ordered_sections()) {
    const Section& section = *s;
    os << "\n";
    if (!section.name.empty()) os << "[" << section.name << "]\n";
    for (const auto& o : options_)
      if (o.section == section.name && o.alias_of.empty()) os << o.key << " = " << o.get() << "\n";
  }
  return os.str();
}

void Options::save(const std::filesystem::path& file) const { write_file_atomically(file, to_ini()); }

}  // namespace cvx
