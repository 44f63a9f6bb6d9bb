// The table of program sections: each program's foreign sections are the other programs' sections
// minus its own, the table says exactly what each program registers, and one experiment file
// serves every program.
#include <gtest/gtest.h>

#include <fstream>

#include "cvx/app/general_config.h"
#include "cvx/app/program_sections.h"
#include "cvx/core/options.h"
#include "cvx/data/data_config.h"
#include "cvx/model/model_config.h"
#include "cvx/precompute/precompute_config.h"
#include "test_util.h"

namespace {

using Names = std::vector<std::string>;

// The Options of cvx_precompute, as its main builds them; `with_precompute` false leaves out its section.
struct PrecomputeOptions {
  cvx::GeneralConfig general;
  cvx::ModelConfig model;
  cvx::DataConfig data;
  cvx::PrecomputeConfig precompute;
  cvx::Options options{"cvx_precompute", ""};
  explicit PrecomputeOptions(bool with_precompute = true) {
    options.add("", general).add("model", model).add("data", data);
    if (with_precompute) options.add("precompute", precompute);
  }
  void parse_file(const std::string& content) {
    const auto file = cvx::test::scratch_dir("program_sections") / "shared.ini";
    std::ofstream(file) << content;
    std::string config = "--config", path = file.string(), program = "cvx_precompute";
    char* argv[] = {program.data(), config.data(), path.data()};
    options.parse(3, argv);
  }
};

}  // namespace

TEST(ProgramSections, ForeignSectionsAreTheOtherProgramsSectionsMinusItsOwn) {
  EXPECT_EQ(cvx::foreign_sections_of("cvx_train"), Names{"precompute"});
  EXPECT_EQ(cvx::foreign_sections_of("cvx_precompute"), (Names{"train", "lora", "parallel", "validation"}));
  EXPECT_EQ(cvx::foreign_sections_of("cvx_generate"),
            (Names{"model", "data", "precompute", "train", "lora", "parallel", "validation"}));
  // The same, derived from the table for any row.
  std::set<std::string> all;
  for (const auto& p : cvx::program_sections())
    for (const auto& s : p.sections)
      if (!s.empty()) all.insert(s);
  for (const auto& p : cvx::program_sections()) {
    SCOPED_TRACE(p.program);
    const auto foreign = cvx::foreign_sections_of(p.program);
    std::set<std::string> covered(foreign.begin(), foreign.end());
    EXPECT_EQ(covered.size(), foreign.size()) << "listed once each";
    for (const auto& s : p.sections) {
      EXPECT_EQ(covered.count(s), 0u) << s << " is its own";
      if (!s.empty()) covered.insert(s);
    }
    EXPECT_EQ(covered, all);
  }
  EXPECT_THROW(cvx::foreign_sections_of("cvx_inspect"), cvx::Error);
}

// Every program compares its row with the sections it registered when it starts (before parsing),
// so `--help` fails on a stale table, e.g. one listing a section the program does not have.
TEST(ProgramSections, TheTableSaysWhatEachProgramRegisters) {
  for (const auto& p : cvx::program_sections()) {
    std::string out;
    EXPECT_EQ(cvx::test::run_command(cvx::test::shell_quote(cvx::test::built_program(p.program)) + " --help", &out), 0)
        << p.program << ": " << out;
  }
  PrecomputeOptions stale(/*with_precompute=*/false);
  try {
    cvx::add_foreign_sections(stale.options, "cvx_precompute");
    FAIL() << "a program without its [precompute] section passed the check";
  } catch (const cvx::Error& e) {
    EXPECT_NE(e.message().find("program_sections.cpp lists top-level keys, [data], [model], [precompute]"),
              std::string::npos)
        << e.message();
  }
}

TEST(ProgramSections, OneExperimentFileServesEveryProgram) {
  PrecomputeOptions p;
  cvx::add_foreign_sections(p.options, "cvx_precompute");
  p.parse_file(
      "log_level = info\n[model]\npath = /m\n[data]\nstore = /s.h5\n[precompute]\ndecode_threads = 3\n"
      "[train]\nlearning_rate = 1e-4\n[lora]\nrank = 4\n[parallel]\nsharding = full\n"
      "[validation]\nenabled = false\n");
  EXPECT_EQ(p.precompute.decode_threads, 3);
  // No program has a [generate] section (cvx_generate's options are top-level keys), so it is a typo.
  PrecomputeOptions q;
  cvx::add_foreign_sections(q.options, "cvx_precompute");
  try {
    q.parse_file("[model]\npath = /m\n[generate]\nprompt = a cat\n");
    FAIL() << "[generate] accepted";
  } catch (const cvx::ConfigError& e) {
    EXPECT_NE(e.message().find("unknown key 'prompt' in section [generate]"), std::string::npos) << e.message();
  }
}
