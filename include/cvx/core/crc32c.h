// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): the checksum of TFRecord framing
// (TensorBoard event files) and of checkpoint file manifests.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string_view>

namespace cvx {

// Continues a running checksum: crc32c(b, n2, crc32c(a, n1)) == crc32c(a+b, n1+n2).
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);
inline uint32_t crc32c(std::string_view bytes, uint32_t crc = 0) { return crc32c(bytes.data(), bytes.size(), crc); }

// TFRecord's masked form: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t masked_crc32c(uint32_t crc);

// The CRC-32C of a whole file, read in chunks. Throws SystemError naming the file.
uint32_t file_crc32c(const std::filesystem::path& file);

}  // namespace cvx
