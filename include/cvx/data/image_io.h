// Images through FFmpeg: any format it decodes (PNG, JPEG, WebP, ...) in, PNG out.
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <string>

namespace cvx {

// -> [H, W, 3] uint8 RGB (the first frame of the file). Throws FormatError naming the file.
torch::Tensor read_image(const std::filesystem::path& file);

// [H, W, 3] uint8 RGB -> the bytes of a PNG file (lossless), in memory (TensorBoard images).
std::string encode_png(const torch::Tensor& image);

// [H, W, 3] uint8 RGB -> PNG (encode_png), written under a temporary name and renamed into place.
void write_png(const std::filesystem::path& file, const torch::Tensor& image);

}  // namespace cvx
