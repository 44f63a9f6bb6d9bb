#include <gtest/gtest.h>

#include "cvx/core/checked_call.h"
#include "cvx/core/error.h"

TEST(Error, CheckCarriesMessageAndLocation) {
  try {
    const int got = 3;
    CVX_CHECK(got == 4, "expected 4 frames, got ", got);
    FAIL() << "CVX_CHECK did not throw";
  } catch (const cvx::Error& e) {
    EXPECT_EQ(e.message(), "expected 4 frames, got 3");
    EXPECT_NE(e.where().find("tests/unit/error_test.cpp:"), std::string::npos) << e.where();
  }
}

TEST(Error, TypedChecksThrowTheirType) {
  EXPECT_THROW(CVX_CHECK_AS(cvx::ConfigError, false, "x"), cvx::ConfigError);
  EXPECT_THROW(CVX_CHECK_AS(cvx::FormatError, false, "x"), cvx::Error);
}

TEST(Error, AvAndHdf5WrappersDescribeTheFailure) {
  try {
    CVX_AV(-2);  // AVERROR(ENOENT)
    FAIL();
  } catch (const cvx::SystemError& e) {
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos) << e.what();
  }
  EXPECT_EQ(CVX_AV(5), 5);
  EXPECT_THROW(CVX_H5(-1), cvx::SystemError);
  EXPECT_EQ(CVX_H5(7), 7);
}

TEST(Error, OneLineEscapesControlCharactersAndShortens) {
  EXPECT_EQ(cvx::one_line("a\nb\tc\x7f"), "a\\x0ab\\x09c\\x7f");
  EXPECT_EQ(cvx::quote("caf\xc3\xa9"), "\"caf\xc3\xa9\"");
  EXPECT_EQ(cvx::one_line(std::string(500, 'x'), 10), std::string(10, 'x') + "...");
  EXPECT_EQ(cvx::quote(std::string("a\0b", 3)), "\"a\\x00b\"");
}
