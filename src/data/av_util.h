// Ownership helpers for FFmpeg objects, and the decoding steps images and videos share (private to src/data).
#pragma once
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libswscale/swscale.h>
}

#include <torch/torch.h>

#include <filesystem>
#include <memory>

namespace cvx::av {

struct FrameDeleter {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct PacketDeleter {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct CodecContextDeleter {
  void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct SwsDeleter {
  void operator()(SwsContext* s) const { sws_freeContext(s); }
};
struct InputDeleter {
  void operator()(AVFormatContext* f) const { avformat_close_input(&f); }
};

// FFmpeg's own logging (encoder statistics, ...) would interleave with ours; keep only its errors,
// which our checked calls report with context anyway.
inline void quiet_logging() { av_log_set_level(AV_LOG_ERROR); }

using Frame = std::unique_ptr<AVFrame, FrameDeleter>;
using Packet = std::unique_ptr<AVPacket, PacketDeleter>;
using CodecContext = std::unique_ptr<AVCodecContext, CodecContextDeleter>;
using Sws = std::unique_ptr<SwsContext, SwsDeleter>;
using Input = std::unique_ptr<AVFormatContext, InputDeleter>;

// A media file opened for decoding its best video stream.
struct DecodingInput {
  Input input;
  CodecContext decoder;
  int stream = -1;
  AVStream* video_stream() const { return input->streams[stream]; }
};

// Opens `file` and a decoder for its best video stream; `kind` ("image", "video") words the
// messages. threads: decoder threads, 0 lets FFmpeg choose. A missing file is a ConfigError;
// anything FFmpeg cannot open, probe or decode is a FormatError naming the file and the reason.
DecodingInput open_decoding_input(const std::filesystem::path& file, const char* kind, int threads = 1);

// A decoded frame of any pixel format -> [out_height, out_width, 3] uint8 RGB (the frame's own
// size when 0), scaled by swscale's bicubic filter: what ffmpeg's scale filter does by default,
// and so what the official scheme's decord VideoReader(width=, height=) does. `sws` is reused
// across calls (recreated when size or format changes).
torch::Tensor frame_to_rgb(const AVFrame& frame, Sws& sws, const std::filesystem::path& file, int out_width = 0,
                           int out_height = 0);
// The same into `out`: out_height rows of 3 * out_width bytes.
void frame_to_rgb_into(const AVFrame& frame, Sws& sws, const std::filesystem::path& file, int out_width, int out_height,
                       uint8_t* out);

}  // namespace cvx::av
