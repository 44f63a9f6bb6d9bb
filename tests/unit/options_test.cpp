#include "cvx/core/options.h"

#include <gtest/gtest.h>

#include <fstream>

#include "cvx/data/data_config.h"
#include "cvx/model/lora_config.h"
#include "cvx/train/train_config.h"
#include "test_util.h"

namespace {

struct Args {
  explicit Args(std::vector<std::string> a) : storage(std::move(a)) {
    storage.insert(storage.begin(), "prog");
    for (auto& s : storage) pointers.push_back(s.data());
  }
  int argc() { return static_cast<int>(pointers.size()); }
  char** argv() { return pointers.data(); }
  std::vector<std::string> storage;
  std::vector<char*> pointers;
};

struct Fixture {
  cvx::TrainConfig train;
  cvx::LoraConfig lora;
  cvx::DataConfig data;
  cvx::Options options{"prog", "test program"};
  Fixture() { options.add("train", train).add("lora", lora).add("data", data); }
  cvx::Options::Outcome parse(std::vector<std::string> a) {
    Args args(std::move(a));
    return options.parse(args.argc(), args.argv());
  }
};

std::string write_ini(const std::string& name, const std::string& content) {
  const auto dir = cvx::test::scratch_dir("options");
  const auto file = dir / name;
  std::ofstream(file) << content;
  return file.string();
}

std::string error_of(Fixture& f, std::vector<std::string> args) {
  try {
    f.parse(std::move(args));
  } catch (const cvx::ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Options, DefaultsWhenNothingGiven) {
  Fixture f;
  EXPECT_EQ(f.parse({}), cvx::Options::Outcome::run);
  EXPECT_EQ(f.train.learning_rate, 2e-5);
  EXPECT_EQ(f.lora.rank, 128);
  EXPECT_FALSE(f.options.was_set("train.learning_rate"));
}

TEST(Options, IniThenCommandLineWins) {
  Fixture f;
  const auto ini = write_ini("a.ini",
                             "# experiment\n[train]\nlearning_rate = 1e-4  # peak\nbatch_size=2\n"
                             "[lora]\nrank = 64\ntarget_modules = to_q, to_k,ff.net.0.proj\n");
  f.parse({"--config", ini, "--train.learning_rate=3e-4", "--alpha", "32"});
  EXPECT_DOUBLE_EQ(f.train.learning_rate, 3e-4);
  EXPECT_EQ(f.train.batch_size, 2);
  EXPECT_EQ(f.lora.rank, 64);
  EXPECT_DOUBLE_EQ(f.lora.alpha, 32);
  EXPECT_EQ(f.lora.target_modules, (std::vector<std::string>{"to_q", "to_k", "ff.net.0.proj"}));
  EXPECT_TRUE(f.options.was_set("lora.alpha"));
  EXPECT_EQ(f.options.config_file(), ini);
}

TEST(Options, BoolForms) {
  Fixture f;
  f.parse({"--train.gradient_checkpointing", "false"});
  EXPECT_FALSE(f.train.gradient_checkpointing);
  Fixture g;
  g.train.gradient_checkpointing = false;
  g.parse({"--gradient_checkpointing"});  // bare flag means true
  EXPECT_TRUE(g.train.gradient_checkpointing);
  Fixture h;
  const auto ini = write_ini("b.ini", "[train]\ngradient_checkpointing = off\n");
  h.parse({"--config", ini});
  EXPECT_FALSE(h.train.gradient_checkpointing);
}

// The official scheme parses its bools with argparse type=bool, so "False" is a non-empty string and
// stays True. Here every spelling of false is false, in every position it can be given.
TEST(Options, EveryFalseSpellingOnTheCommandLineIsFalse) {
  for (const std::string word : {"False", "false", "FALSE", "0", "no", "off", "No", "OFF"}) {
    Fixture spaced;  // default true, so false can only come from the parsed word
    ASSERT_TRUE(spaced.train.gradient_checkpointing);
    spaced.parse({"--train.gradient_checkpointing", word});
    EXPECT_FALSE(spaced.train.gradient_checkpointing) << "--train.gradient_checkpointing " << word;
    EXPECT_TRUE(spaced.options.was_set("train.gradient_checkpointing"));
    Fixture joined;
    joined.parse({"--train.gradient_checkpointing=" + word});
    EXPECT_FALSE(joined.train.gradient_checkpointing) << "--train.gradient_checkpointing=" << word;
    Fixture short_name;  // the key alone, as it exists in one section only
    short_name.parse({"--gradient_checkpointing", word, "--seed", "3"});
    EXPECT_FALSE(short_name.train.gradient_checkpointing) << "--gradient_checkpointing " << word;
    EXPECT_EQ(short_name.train.seed, 3);  // the word was the flag's value, not a stray argument
  }
}

TEST(Options, EveryFalseSpellingInAnIniFileIsFalse) {
  for (const std::string word : {"False", "false", "0", "no", "off"}) {
    Fixture f;
    const auto ini = write_ini("false_" + word + ".ini", "[train]\ngradient_checkpointing = " + word + "\n");
    f.parse({"--config", ini});
    EXPECT_FALSE(f.train.gradient_checkpointing) << "gradient_checkpointing = " << word;
  }
}

TEST(Options, EveryTrueSpellingIsTrue) {
  for (const std::string word : {"True", "true", "yes", "YES", "1", "on"}) {
    Fixture cli;
    cli.train.gradient_checkpointing = false;  // so true can only come from the parsed word
    cli.parse({"--train.gradient_checkpointing", word});
    EXPECT_TRUE(cli.train.gradient_checkpointing) << "--train.gradient_checkpointing " << word;
    Fixture joined;
    joined.train.gradient_checkpointing = false;
    joined.parse({"--train.gradient_checkpointing=" + word});
    EXPECT_TRUE(joined.train.gradient_checkpointing) << "--train.gradient_checkpointing=" << word;
    Fixture ini;
    ini.train.gradient_checkpointing = false;
    ini.parse({"--config", write_ini("true_" + word + ".ini", "[train]\ngradient_checkpointing = " + word + "\n")});
    EXPECT_TRUE(ini.train.gradient_checkpointing) << "gradient_checkpointing = " << word;
  }
}

TEST(Options, NonBooleanWordForABoolIsAnErrorNamingTheOption) {
  const auto expect_refused = [](const std::string& message, const std::string& origin) {
    EXPECT_NE(message.find("invalid value 'maybe' for train.gradient_checkpointing"), std::string::npos) << message;
    EXPECT_NE(message.find(origin), std::string::npos) << message;
    EXPECT_NE(message.find("expected a boolean"), std::string::npos) << message;
  };
  Fixture spaced;
  expect_refused(error_of(spaced, {"--train.gradient_checkpointing", "maybe"}), "command line");
  Fixture joined;
  expect_refused(error_of(joined, {"--train.gradient_checkpointing=maybe"}), "command line");
  Fixture ini;
  const auto file = write_ini("maybe.ini", "[train]\ngradient_checkpointing = maybe\n");
  expect_refused(error_of(ini, {"--config", file}), file + ":2");
}

TEST(Options, BareBoolFlagBeforeAnotherOptionIsTrue) {
  Fixture f;
  f.train.gradient_checkpointing = false;
  f.parse({"--train.gradient_checkpointing", "--train.seed", "5"});
  EXPECT_TRUE(f.train.gradient_checkpointing);
  EXPECT_EQ(f.train.seed, 5);
}

TEST(Options, AliasSetsTheOptionItNamesAndIsNeverWritten) {
  Fixture f;
  const auto ini = write_ini("alias.ini", "[lora]\nlora_alpha = 32\n");
  f.parse({"--config", ini});
  EXPECT_DOUBLE_EQ(f.lora.alpha, 32);
  EXPECT_TRUE(f.options.was_set("lora.alpha"));
  EXPECT_FALSE(f.options.was_set("lora.lora_alpha"));
  const std::string resolved = f.options.to_ini();
  EXPECT_NE(resolved.find("\nalpha = 32\n"), std::string::npos) << resolved;
  EXPECT_EQ(resolved.find("lora_alpha"), std::string::npos) << resolved;
  EXPECT_EQ(resolved.find("lora_dropout"), std::string::npos) << resolved;
  // The resolved file reads back to the same configuration.
  const auto file = cvx::test::scratch_dir("options_alias") / "resolved.ini";
  f.options.save(file);
  Fixture g;
  g.parse({"--config", file.string()});
  EXPECT_DOUBLE_EQ(g.lora.alpha, 32);
  EXPECT_EQ(g.options.to_ini(), resolved);
}

TEST(Options, AliasOnTheCommandLineSetsTheOption) {
  Fixture f;
  f.parse({"--lora.lora_alpha", "16", "--lora_dropout", "0.1"});
  EXPECT_DOUBLE_EQ(f.lora.alpha, 16);
  EXPECT_DOUBLE_EQ(f.lora.dropout, 0.1);
  EXPECT_TRUE(f.options.was_set("lora.alpha"));
  EXPECT_TRUE(f.options.was_set("lora.dropout"));
}

TEST(Options, AliasAndItsOptionInOneFileAreRefused) {
  Fixture f;
  const auto ini = write_ini("alias_twice.ini", "[lora]\nalpha = 64\nlora_alpha = 32\n");
  const std::string message = error_of(f, {"--config", ini});
  EXPECT_NE(message.find("lora.alpha (line 2) and lora.lora_alpha (line 3)"), std::string::npos) << message;
  EXPECT_NE(message.find("same option lora.alpha"), std::string::npos) << message;
}

TEST(Options, HelpShowsAnAliasAsSuch) {
  Fixture f;
  const std::string help = f.options.help_text();
  EXPECT_NE(help.find("--lora.lora_alpha <float>"), std::string::npos) << help;
  EXPECT_NE(help.find("alias of alpha"), std::string::npos) << help;
}

TEST(Options, UnknownIniKeyNamesKeyFileLineAndSuggestion) {
  Fixture f;
  const auto ini = write_ini("bad.ini", "[train]\nbatch_size = 1\nlerning_rate = 1e-4\n");
  const std::string message = error_of(f, {"--config", ini});
  EXPECT_NE(message.find("unknown key 'lerning_rate' in section [train]"), std::string::npos) << message;
  EXPECT_NE(message.find(ini + ":3"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean 'train.learning_rate'?"), std::string::npos) << message;
}

TEST(Options, KeyInWrongSectionSuggestsTheRightOne) {
  Fixture f;
  const auto ini = write_ini("wrong_section.ini", "[train]\nrank = 4\n");
  const std::string message = error_of(f, {"--config", ini});
  EXPECT_NE(message.find("did you mean 'lora.rank'?"), std::string::npos) << message;
}

TEST(Options, UnknownCommandLineOptionSuggests) {
  Fixture f;
  const std::string message = error_of(f, {"--train.batch_sise", "2"});
  EXPECT_NE(message.find("unknown option --train.batch_sise"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean --train.batch_size?"), std::string::npos) << message;
}

TEST(Options, BadValueNamesKeyOriginAndExpectation) {
  Fixture f;
  const auto ini = write_ini("value.ini", "[lora]\nrank = sixteen\n");
  const std::string message = error_of(f, {"--config", ini});
  EXPECT_NE(message.find("invalid value 'sixteen' for lora.rank"), std::string::npos) << message;
  EXPECT_NE(message.find(ini + ":2"), std::string::npos) << message;
  EXPECT_NE(message.find("expected an integer"), std::string::npos) << message;
  Fixture g;
  const std::string choice = error_of(g, {"--train.lr_scheduler", "cosine_annealing"});
  EXPECT_NE(choice.find("expected one of: constant, constant_with_warmup"), std::string::npos) << choice;
}

TEST(Options, ValidationFailureNamesSection) {
  Fixture f;
  const std::string message = error_of(f, {"--lora.rank", "0"});
  EXPECT_NE(message.find("[lora] rank must be > 0"), std::string::npos) << message;
  Fixture g;
  const std::string frames = error_of(g, {"--train_resolution", "50x480x720"});
  EXPECT_NE(frames.find("nearest valid: 49 or 57"), std::string::npos) << frames;
}

TEST(Options, DuplicateKeyInFileIsAnError) {
  Fixture f;
  const auto ini = write_ini("dup.ini", "[train]\nseed = 1\nseed = 2\n");
  const std::string message = error_of(f, {"--config", ini});
  EXPECT_NE(message.find("set twice"), std::string::npos) << message;
  EXPECT_NE(message.find("lines 2 and 3"), std::string::npos) << message;
}

namespace {
struct StepsConfig {
  int64_t steps = 1;
  template <class V>
  void visit(V& v) {
    v("steps", steps, "a");
  }
  void validate() const {}
};
}  // namespace

TEST(Options, AmbiguousShortNameIsRefused) {
  StepsConfig a, b;
  cvx::Options options("prog", "x");
  options.add("one", a).add("two", b);
  Args args({"--steps", "3"});
  try {
    options.parse(args.argc(), args.argv());
    FAIL();
  } catch (const cvx::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("ambiguous"), std::string::npos) << e.what();
  }
}

TEST(Options, ResolvedIniRoundTrips) {
  Fixture f;
  f.parse({"--train.learning_rate", "1.5e-4", "--lora.target_modules", "to_q,to_v", "--data.id_token", "sks dog"});
  const auto file = cvx::test::scratch_dir("options_roundtrip") / "config.ini";
  f.options.save(file);
  Fixture g;
  g.parse({"--config", file.string()});
  EXPECT_EQ(g.options.to_ini(), f.options.to_ini());
  EXPECT_DOUBLE_EQ(g.train.learning_rate, 1.5e-4);
  EXPECT_EQ(g.lora.target_modules, (std::vector<std::string>{"to_q", "to_v"}));
  EXPECT_EQ(g.data.lists.id_token, "sks dog");
}

TEST(Options, HelpListsEveryOptionWithDefault) {
  Fixture f;
  EXPECT_EQ(f.parse({"--help"}), cvx::Options::Outcome::help_shown);
  const std::string help = f.options.help_text();
  for (const auto& o : f.options.options()) {
    EXPECT_NE(help.find("--" + o.full_name() + " <"), std::string::npos) << o.full_name();
  }
  EXPECT_NE(help.find("--train.learning_rate <float>  (default: 2e-05)"), std::string::npos) << help;
}

TEST(Options, ForeignSectionsAreIgnoredInFiles) {
  Fixture f;
  f.options.foreign_sections({"precompute"});
  const auto ini = write_ini("shared.ini", "[precompute]\nwhatever = 1\n[train]\nseed = 7\n");
  f.parse({"--config", ini});
  EXPECT_EQ(f.train.seed, 7);
}

TEST(Options, EditDistance) {
  EXPECT_EQ(cvx::edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(cvx::edit_distance("", "abc"), 3u);
  EXPECT_EQ(cvx::edit_distance("same", "same"), 0u);
}
