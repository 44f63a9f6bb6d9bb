// Ownership helpers for FFmpeg objects (private to src/data).
#pragma once
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libswscale/swscale.h>
}

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

}  // namespace cvx::av
