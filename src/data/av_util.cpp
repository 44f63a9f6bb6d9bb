#include "av_util.h"

#include "cvx/core/checked_call.h"
#include "cvx/core/error.h"

extern "C" {
#include <libavutil/error.h>
#include <libavutil/pixdesc.h>
}

// FFmpeg's error rendering for CVX_AV (checked_call.h), here with the rest of FFmpeg's use.
namespace cvx {
std::string av_error_string(int code) {
  char buffer[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(code, buffer, sizeof(buffer));
  return std::string(buffer) + " (code " + std::to_string(code) + ")";
}

}  // namespace cvx

namespace cvx::av {

DecodingInput open_decoding_input(const std::filesystem::path& file, const char* kind, int threads) {
  CVX_CHECK_AS(ConfigError, std::filesystem::exists(file), kind, " ", file.string(), " does not exist");
  quiet_logging();
  DecodingInput in;
  AVFormatContext* raw = nullptr;
  const int rc = avformat_open_input(&raw, file.c_str(), nullptr, nullptr);
  CVX_CHECK_AS(FormatError, rc >= 0, "cannot open ", kind, " ", file.string(), ": ", av_error_string(rc));
  in.input.reset(raw);
  const int info_rc = avformat_find_stream_info(in.input.get(), nullptr);
  CVX_CHECK_AS(FormatError, info_rc >= 0, "cannot read ", kind, " ", file.string(), ": ", av_error_string(info_rc));
  in.stream = av_find_best_stream(in.input.get(), AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  CVX_CHECK_AS(FormatError, in.stream >= 0, file.string(), " holds no ", kind, " (no video stream)");
  const AVCodecParameters* params = in.video_stream()->codecpar;
  const AVCodec* codec = avcodec_find_decoder(params->codec_id);
  CVX_CHECK_AS(FormatError, codec != nullptr, "no decoder for ", kind, " ", file.string(), " (codec ",
               avcodec_get_name(params->codec_id), "; install an FFmpeg built with one)");
  in.decoder.reset(avcodec_alloc_context3(codec));
  CVX_AV(avcodec_parameters_to_context(in.decoder.get(), params));
  in.decoder->thread_count = threads;
  in.decoder->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
  const int open_rc = avcodec_open2(in.decoder.get(), codec, nullptr);
  CVX_CHECK_AS(FormatError, open_rc >= 0, "cannot open the ", avcodec_get_name(params->codec_id), " decoder for ", kind,
               " ", file.string(), ": ", av_error_string(open_rc));
  return in;
}

torch::Tensor frame_to_rgb(const AVFrame& frame, Sws& sws, const std::filesystem::path& file, int out_width,
                           int out_height) {
  const int width = out_width > 0 ? out_width : frame.width, height = out_height > 0 ? out_height : frame.height;
  // Same size in and out: the flags only choose the chroma upsampling filter. Scaling here, in
  // the one pass that converts to RGB, costs less than converting at full size and resizing after.
  auto image = torch::empty({height, width, 3}, torch::kUInt8);  // [H, W, 3]
  frame_to_rgb_into(frame, sws, file, width, height, image.data_ptr<uint8_t>());
  return image;
}

void frame_to_rgb_into(const AVFrame& frame, Sws& sws, const std::filesystem::path& file, int out_width, int out_height,
                       uint8_t* out) {
  sws.reset(sws_getCachedContext(sws.release(), frame.width, frame.height, static_cast<AVPixelFormat>(frame.format),
                                 out_width, out_height, AV_PIX_FMT_RGB24, SWS_BICUBIC, nullptr, nullptr, nullptr));
  if (sws == nullptr) {
    const char* name = av_get_pix_fmt_name(static_cast<AVPixelFormat>(frame.format));
    CVX_THROW_AS(FormatError, "unsupported pixel format ", name ? name : "(unknown)", " in ", file.string());
  }
  uint8_t* dst[1] = {out};
  const int dst_stride[1] = {3 * out_width};
  sws_scale(sws.get(), frame.data, frame.linesize, 0, frame.height, dst, dst_stride);
}

}  // namespace cvx::av
