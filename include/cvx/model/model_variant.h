// The released CogVideoX models, by the names cvx gives them ([model] variant, cvx_make_tiny
// --variant, TransformerConfig::variant(), the store header), and the prompt length they share.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace cvx {

// T5 prompts are padded or truncated to this many tokens, and the transformer's sequence holds
// that many text tokens: the same for every released CogVideoX.
constexpr int64_t kMaxTextLength = 226;

// CogVideoX-2b, -5b, -5b-I2V, CogVideoX1.5-5B, -5B-I2V.
constexpr const char* kVariant2b = "2b";
constexpr const char* kVariant5b = "5b";
constexpr const char* kVariant5bI2v = "5b-i2v";
constexpr const char* kVariant15T2v = "1.5-t2v";
constexpr const char* kVariant15I2v = "1.5-i2v";

// The five above, in that order.
const std::vector<std::string>& released_variants();
// The released names joined by `separator`: "2b|5b|5b-i2v|1.5-t2v|1.5-i2v" for a usage line.
std::string released_variant_list(const std::string& separator = ", ");
// Throws ConfigError naming the released variants when `variant` is not one of them.
void check_released_variant(const std::string& variant);
// The image-to-video ones (5b-i2v, 1.5-i2v).
bool is_i2v_variant(const std::string& variant);
// The CogVideoX1.5 ones (1.5-t2v, 1.5-i2v).
bool is_cogvideox15_variant(const std::string& variant);

}  // namespace cvx
