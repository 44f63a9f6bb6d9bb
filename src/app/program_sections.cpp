#include "cvx/app/program_sections.h"

#include <algorithm>
#include <set>

#include "cvx/core/error.h"
#include "cvx/core/options.h"

namespace cvx {
namespace {

const ProgramSections& sections_of(const std::string& program) {
  const auto& table = program_sections();
  const auto it = std::find_if(table.begin(), table.end(), [&](const auto& p) { return p.program == program; });
  CVX_CHECK(it != table.end(), "program ", quote(program), " is not in the table of program sections");
  return *it;
}

std::string section_list(const std::set<std::string>& sections) {
  std::string out;
  for (const auto& s : sections) {
    if (!out.empty()) out += ", ";
    out += s.empty() ? std::string("top-level keys") : "[" + s + "]";
  }
  return out.empty() ? "none" : out;
}

}  // namespace

const std::vector<ProgramSections>& program_sections() {
  static const std::vector<ProgramSections> table{
      {"cvx_precompute", {"", "model", "data", "precompute"}},
      // Not [precompute]: it and [train] both have dry_run, which would make --dry_run ambiguous
      // (precompute_if_missing runs the precompute with its defaults).
      {"cvx_train", {"", "model", "data", "train", "lora", "parallel", "validation"}},
      // Its options are top-level keys: it has no section of its own.
      {"cvx_generate", {""}},
  };
  return table;
}

std::vector<std::string> foreign_sections_of(const std::string& program) {
  const auto& own = sections_of(program).sections;
  std::vector<std::string> foreign;
  for (const auto& other : program_sections()) {
    for (const auto& section : other.sections) {
      // Top-level keys are no section: a program refuses the top-level keys it does not know.
      if (section.empty() || std::count(own.begin(), own.end(), section) ||
          std::count(foreign.begin(), foreign.end(), section))
        continue;
      foreign.push_back(section);
    }
  }
  return foreign;
}

void add_foreign_sections(Options& options, const std::string& program) {
  std::set<std::string> registered;
  for (const auto& o : options.options()) registered.insert(o.section);
  const auto& own = sections_of(program).sections;
  const std::set<std::string> listed(own.begin(), own.end());
  CVX_CHECK(registered == listed, program, " registers ", section_list(registered), " but program_sections.cpp lists ",
            section_list(listed));
  options.foreign_sections(foreign_sections_of(program));
}

}  // namespace cvx
