// Which INI sections each cvx program reads. One experiment file serves cvx_precompute and
// cvx_train: each program reads its own sections and skips the other programs' (Options::
// foreign_sections), while a section that no program reads is still an unknown key. cvx_generate
// has top-level keys only, which the others refuse like any unknown key.
#pragma once
#include <string>
#include <vector>

namespace cvx {
class Options;

struct ProgramSections {
  std::string program;                // "cvx_train"
  std::vector<std::string> sections;  // exactly what it registers with Options::add; "" = top-level keys
};

// Every program that reads an experiment file.
const std::vector<ProgramSections>& program_sections();

// The sections of the other programs that `program` does not register itself. Throws Error for a
// program not in the table.
std::vector<std::string> foreign_sections_of(const std::string& program);

// Gives `options` (the Options of `program`, every section added) its foreign sections, after
// checking that the sections it registered are the table's: a section added to a program but not
// to the table would otherwise be refused in the other programs' shared files.
void add_foreign_sections(Options& options, const std::string& program);

}  // namespace cvx
