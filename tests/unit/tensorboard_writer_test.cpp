// TensorBoard event files, read back by tools/read_tfevents.py (python3-protobuf on the same
// .proto, every TFRecord CRC checked), and the writer's failure naming the file.
#include "cvx/train/tensorboard_writer.h"

#include <gtest/gtest.h>

#include <fstream>

#include "test_util.h"

using namespace cvx;
namespace fs = std::filesystem;

namespace {
std::vector<fs::path> event_files(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) files.push_back(e.path());
  return files;
}
}  // namespace

TEST(TensorBoardWriter, ScalarsAndImagesReadBackWithProtobufAsFloat32AndPng) {
  const auto dir = test::scratch_dir("tensorboard") / "tensorboard";
  const std::vector<double> losses{0.125, 1.0 / 3.0, 2.5e-7};
  auto image = torch::zeros({6, 10, 3}, torch::kUInt8);  // [H, W, 3] uint8
  image.select(2, 0).fill_(200);
  {
    TensorBoardWriter writer(dir);
    EXPECT_EQ(writer.file().parent_path(), dir);
    for (size_t i = 0; i < losses.size(); ++i) writer.add_scalar("train/loss", static_cast<int64_t>(i + 1), losses[i]);
    writer.flush();
    writer.add_image("validation/first_frame", 3, image);
  }
  const auto files = event_files(dir);
  ASSERT_EQ(files.size(), 1u);
  EXPECT_NE(files[0].filename().string().find(std::to_string(getpid())), std::string::npos) << files[0];
  std::string output;
  const auto events = test::read_tfevents(files, &output);
  ASSERT_TRUE(events) << output;
  EXPECT_EQ((*events)["files"][0]["file_version"], "brain.Event:2");
  EXPECT_GT((*events)["files"][0]["wall_time"].get<double>(), 1.6e9);
  const auto& scalars = (*events)["scalars"];
  ASSERT_EQ(scalars.size(), losses.size()) << output;
  for (size_t i = 0; i < losses.size(); ++i) {
    EXPECT_EQ(scalars[i]["tag"], "train/loss");
    EXPECT_EQ(scalars[i]["step"].get<int64_t>(), static_cast<int64_t>(i + 1));
    EXPECT_EQ(static_cast<float>(scalars[i]["value"].get<double>()), static_cast<float>(losses[i]));
  }
  const auto& images = (*events)["images"];
  ASSERT_EQ(images.size(), 1u) << output;
  EXPECT_EQ(images[0]["tag"], "validation/first_frame");
  EXPECT_EQ(images[0]["width"], 10);
  EXPECT_EQ(images[0]["height"], 6);
  EXPECT_EQ(images[0]["colorspace"], 3);
  EXPECT_TRUE(images[0]["png"].get<bool>()) << "the encoded image starts with the PNG signature";
}

TEST(TensorBoardWriter, StepScalarsLeaveOutAnUnknownMfu) {
  const auto dir = test::scratch_dir("tensorboard_step");
  {
    TensorBoardWriter writer(dir);
    StepReport r;
    r.step = 7;
    r.loss = 0.5;
    r.peak_memory_bytes = 3ull << 29;  // 1.5 GiB
    r.mfu = -1;
    add_step_scalars(writer, r);
    r.step = 8;
    r.mfu = 0.25;
    add_step_scalars(writer, r);
  }
  const auto events = test::read_tfevents(event_files(dir));
  ASSERT_TRUE(events);
  std::map<std::string, std::vector<int64_t>> steps;
  std::map<std::string, double> last;
  for (const auto& s : (*events)["scalars"]) {
    steps[s["tag"]].push_back(s["step"].get<int64_t>());
    last[s["tag"]] = s["value"].get<double>();
  }
  for (const char* tag : {"train/loss", "train/lr", "train/grad_norm", "perf/step_seconds", "perf/data_wait_seconds",
                          "perf/tokens_per_second", "perf/tflops", "memory/peak_gib"})
    EXPECT_EQ(steps[tag], (std::vector<int64_t>{7, 8})) << tag;
  EXPECT_EQ(steps["perf/mfu"], (std::vector<int64_t>{8}));
  EXPECT_EQ(last["memory/peak_gib"], 1.5);
  EXPECT_EQ(last["perf/mfu"], 0.25);
}

TEST(TensorBoardWriter, ReaderRejectsAFileWithOneCorruptedByte) {
  const auto dir = test::scratch_dir("tensorboard_corrupt");
  {
    TensorBoardWriter writer(dir);
    writer.add_scalar("train/loss", 1, 0.5);
    writer.add_scalar("train/loss", 2, 0.25);
  }
  const auto file = event_files(dir).at(0);
  ASSERT_TRUE(test::read_tfevents({file}));
  std::string bytes;
  {
    std::ifstream in(file, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  // A byte inside the last record's Event (before its 4-byte data CRC): only the CRC can tell.
  std::string corrupted = bytes;
  corrupted[corrupted.size() - 6] ^= 0x01;
  std::ofstream(file, std::ios::binary | std::ios::trunc) << corrupted;
  std::string output;
  EXPECT_FALSE(test::read_tfevents({file}, &output));
  EXPECT_NE(output.find("data CRC mismatch"), std::string::npos) << output;
  // A flipped length byte fails its own CRC.
  corrupted = bytes;
  corrupted[0] ^= 0x01;
  std::ofstream(file, std::ios::binary | std::ios::trunc) << corrupted;
  EXPECT_FALSE(test::read_tfevents({file}, &output));
  EXPECT_NE(output.find("length CRC mismatch"), std::string::npos) << output;
}

TEST(TensorBoardWriter, UnwritableFolderIsASystemErrorNamingIt) {
  const auto dir = test::scratch_dir("tensorboard_blocked");
  std::ofstream(dir / "file") << "x";  // a file where the folder should be
  const std::string message = test::error_text([&] { TensorBoardWriter writer(dir / "file" / "tensorboard"); });
  EXPECT_NE(message.find((dir / "file").string()), std::string::npos) << message;
}
