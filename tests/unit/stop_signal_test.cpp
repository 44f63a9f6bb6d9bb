// SIGUSR1/SIGTERM only record a stop request (the loop acts on it); later signals are counted.
#include <gtest/gtest.h>

#include <csignal>

#include "cvx/core/stop_signal.h"

using namespace cvx;

TEST(StopSignal, Sigusr1IsRecordedAsTheStopRequestAndLaterSignalsAreCountedNotActedOn) {
  install_stop_signal_handlers();
  StopSignalWatch watch;
  const int before = stop_signals_received();
  // A process of the unit-test binary has had no stop signal yet (each test runs in its own process).
  ASSERT_EQ(first_stop_signal(), 0);
  EXPECT_FALSE(watch.requested(3));
  ASSERT_EQ(std::raise(SIGUSR1), 0);  // the process survives: the handler only records it
  EXPECT_EQ(first_stop_signal(), SIGUSR1);
  EXPECT_TRUE(watch.requested(4));
  ASSERT_EQ(std::raise(SIGTERM), 0);
  EXPECT_EQ(first_stop_signal(), SIGUSR1) << "the first signal is the one reported";
  EXPECT_EQ(last_stop_signal(), SIGTERM);
  EXPECT_EQ(stop_signals_received(), before + 2);
  EXPECT_TRUE(watch.requested(4));
  watch.report_ignored();
  EXPECT_EQ(stop_signal_name(SIGUSR1), "SIGUSR1");
  EXPECT_EQ(stop_signal_name(SIGTERM), "SIGTERM");
}
