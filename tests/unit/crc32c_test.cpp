#include "cvx/core/crc32c.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "test_util.h"

namespace cvx {
namespace {

// Check values from RFC 3720 (iSCSI), appendix B.4, and the common "123456789" check value.
TEST(Crc32c, MatchesTheRfc3720CheckValues) {
  EXPECT_EQ(crc32c(std::string("123456789")), 0xE3069283u);
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  std::string ascending(32, '\0');
  for (int i = 0; i < 32; ++i) ascending[i] = static_cast<char>(i);
  EXPECT_EQ(crc32c(ascending), 0x46DD794Eu);
}

TEST(Crc32c, ContinuesAcrossChunks) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data += static_cast<char>(i * 7 + 3);
  for (size_t cut : {0ul, 1ul, 7ul, 8ul, 9ul, 500ul, 1000ul})
    EXPECT_EQ(crc32c(data.substr(cut), crc32c(data.substr(0, cut))), crc32c(data)) << cut;
}

// TensorFlow's record_writer masks the CRC so a CRC of data holding CRCs stays well distributed.
TEST(Crc32c, MaskIsTheTfRecordRotateAndAdd) {
  const uint32_t c = crc32c(std::string("123456789"));
  EXPECT_EQ(masked_crc32c(c), ((c >> 15) | (c << 17)) + 0xa282ead8u);
}

TEST(Crc32c, FileChecksumEqualsTheBytesChecksum) {
  const auto dir = test::scratch_dir("crc32c");
  std::string data(3 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 2654435761u) >> 13);
  std::ofstream(dir / "f.bin", std::ios::binary).write(data.data(), static_cast<std::streamsize>(data.size()));
  EXPECT_EQ(file_crc32c(dir / "f.bin"), crc32c(data));
  EXPECT_THROW(file_crc32c(dir / "missing.bin"), SystemError);
}

}  // namespace
}  // namespace cvx
