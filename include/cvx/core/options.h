// One registry for every option of a program. Config structs stay plain (fields with defaults,
// validate()) and list their fields once in a visit() template:
//
//   template <class V> void visit(V& v) {
//     v("learning_rate", learning_rate, "peak learning rate");
//     v.choice("lr_scheduler", lr_scheduler, {"constant", "cosine"}, "learning-rate schedule");
//   }
//
// Options then adds each struct under an INI section ([train] -> "train.learning_rate"; the empty
// section holds top-level keys), parses `--config file.ini` and the command line (command line
// wins), reports unknown keys with the closest known one, prints `--help`, and renders the
// resolved configuration as INI.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "cvx/core/error.h"

namespace cvx {

struct OptionInfo {
  std::string section;  // "" for top-level keys
  std::string key;
  std::string help;
  std::string type;                  // bool, int, float, string, list
  std::vector<std::string> choices;  // allowed values of a string option, if restricted
  std::string default_value;         // rendered when registered
  std::function<std::string()> get;
  std::function<void(const std::string&)> set;  // throws std::invalid_argument with the reason
  std::string alias_of;  // an alternative name of that option (same section): parsed, never printed
  std::string full_name() const { return section.empty() ? key : section + "." + key; }
};

// Handed to a config struct's visit(); registers each field it is called with.
class OptionVisitor {
 public:
  OptionVisitor(std::string section, std::vector<OptionInfo>& out) : section_(std::move(section)), out_(out) {}
  void operator()(const char* key, bool& value, const char* help);
  void operator()(const char* key, int& value, const char* help);
  void operator()(const char* key, int64_t& value, const char* help);
  void operator()(const char* key, double& value, const char* help);
  void operator()(const char* key, float& value, const char* help);
  void operator()(const char* key, std::string& value, const char* help);
  // Comma-separated on the command line and in INI files.
  void operator()(const char* key, std::vector<std::string>& value, const char* help);
  void operator()(const char* key, std::vector<int64_t>& value, const char* help);
  void choice(const char* key, std::string& value, std::vector<std::string> choices, const char* help);
  // `alias` is another accepted name of the option `key` registered before it (e.g. the official
  // scheme's "lora_alpha" for "alpha"): it sets the same field, shows in --help as an alias and is
  // never written by to_ini().
  void alias(const char* alias, const char* key);

 private:
  void add(OptionInfo info);
  // A field of this section: its text is `get()`, `set` parses a value into it.
  void add(const char* key, const char* help, const char* type, std::function<std::string()> get,
           std::function<void(const std::string&)> set, std::vector<std::string> choices = {});
  std::string section_;
  std::vector<OptionInfo>& out_;
};

class Options {
 public:
  Options(std::string program, std::string summary);

  // Registers every field of `config` under `section` ("" = top level); config.validate() runs
  // after parsing. `config` must outlive this object.
  template <class Config>
  Options& add(const std::string& section, Config& config, std::string section_help = "") {
    OptionVisitor visitor(section, options_);
    config.visit(visitor);
    sections_.push_back({section, std::move(section_help), [&config] { config.validate(); }});
    return *this;
  }
  // Positional arguments (e.g. a path); without it, a positional argument is an error.
  Options& positional(const std::string& name, const std::string& help, std::vector<std::string>* out);

  // INI sections that belong to other cvx programs: one experiment file can serve
  // cvx_precompute, cvx_train and cvx_generate, each reading its own sections.
  Options& foreign_sections(std::vector<std::string> names);

  enum class Outcome { run, help_shown };
  // Applies the INI file given by --config (if any), then the command line, then validates.
  // Throws ConfigError (unknown key with a suggestion, bad value, failed validation).
  Outcome parse(int argc, char** argv);

  std::string help_text() const;
  // The resolved configuration as an INI file that --config accepts.
  std::string to_ini() const;
  // Writes to_ini() atomically into `file`.
  void save(const std::filesystem::path& file) const;
  const std::vector<OptionInfo>& options() const { return options_; }
  // The INI file given with --config, or empty.
  const std::string& config_file() const { return config_file_; }
  // Whether the user set the option (file or command line), by full name.
  bool was_set(const std::string& full_name) const;

 private:
  struct Section {
    std::string name;
    std::string help;
    std::function<void()> validate;
  };
  OptionInfo* find(const std::string& full_name);
  std::vector<const Section*> ordered_sections() const;
  void apply(OptionInfo& option, const std::string& value, const std::string& origin);
  void apply_ini(const std::string& file);
  std::string suggestion_for(const std::string& unknown) const;

  std::string program_;
  std::string summary_;
  std::vector<OptionInfo> options_;
  std::vector<Section> sections_;
  std::string positional_name_;
  std::string positional_help_;
  std::vector<std::string>* positional_out_ = nullptr;
  std::string config_file_;
  std::vector<std::string> set_;
  std::vector<std::string> foreign_sections_;
};

// Edit distance, for "did you mean" suggestions.
size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace cvx
