#include "cvx/data/video_writer.h"

#include "av_util.h"
#include "cvx/core/checked_call.h"
#include "cvx/core/error.h"
#include "cvx/io/atomic_file.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

extern "C" {
#include <libavutil/opt.h>
}

namespace cvx {
namespace {

struct Output {
  AVFormatContext* ctx = nullptr;
  bool opened = false;
  ~Output() {
    if (opened) avio_closep(&ctx->pb);
    avformat_free_context(ctx);
  }
};

// x264 reads heap memory it never wrote: the same frames gave different B-frames (up to 20 levels
// apart) in processes whose heaps held different bytes, while a fresh process, whose memory comes
// zeroed from the kernel, was stable. glibc's M_PERTURB fills every allocation with one byte
// pattern (and every freed block with another) while the encoder runs, so what it reads is the
// same in every process. Process-wide while set: other threads' allocations pay a memset too,
// for the few seconds of an encode.
class DeterministicHeapScope {
 public:
  DeterministicHeapScope() {
#ifdef __GLIBC__
    mallopt(M_PERTURB, 0x5a);
#endif
  }
  ~DeterministicHeapScope() {
#ifdef __GLIBC__
    mallopt(M_PERTURB, 0);
#endif
  }
  DeterministicHeapScope(const DeterministicHeapScope&) = delete;
  DeterministicHeapScope& operator=(const DeterministicHeapScope&) = delete;
};

// Sends one frame (or the flush request) and writes every packet the encoder has ready.
void encode(AVCodecContext* codec, AVStream* stream, AVFormatContext* out, const AVFrame* frame) {
  CVX_AV(avcodec_send_frame(codec, frame));
  av::Packet packet(av_packet_alloc());
  while (true) {
    const int rc = avcodec_receive_packet(codec, packet.get());
    if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return;
    CVX_AV(rc);
    av_packet_rescale_ts(packet.get(), codec->time_base, stream->time_base);
    packet->stream_index = stream->index;
    CVX_AV(av_interleaved_write_frame(out, packet.get()));
  }
}

}  // namespace

torch::Tensor to_uint8_frames(const torch::Tensor& video) {
  auto v = video.detach().to(torch::kCPU, torch::kFloat32);
  if (v.dim() == 5) {
    CVX_CHECK(v.size(0) == 1, "to_uint8_frames: one sample at a time, got a batch of ", v.size(0));
    v = v[0];
  }
  CVX_CHECK(v.dim() == 4 && v.size(1) == 3, "to_uint8_frames: expected [F, 3, H, W], got ", v.sizes());
  return (v * 255).round().clamp(0, 255).to(torch::kUInt8).permute({0, 2, 3, 1}).contiguous();
}

void write_video(const std::filesystem::path& file, const torch::Tensor& frames_in, const VideoWriterOptions& options) {
  CVX_CHECK_AS(ConfigError, frames_in.dim() == 4 && frames_in.size(3) == 3 && frames_in.scalar_type() == torch::kUInt8,
               "write_video(", file.string(), "): expected frames [F, H, W, 3] uint8, got ", frames_in.sizes(), " ",
               frames_in.scalar_type());
  CVX_CHECK_AS(ConfigError, frames_in.size(0) > 0, "write_video(", file.string(), "): no frames");
  CVX_CHECK_AS(ConfigError, options.fps > 0, "write_video: fps must be > 0, got ", options.fps);
  auto frames = frames_in.cpu().contiguous();
  // yuv420p subsamples chroma 2x2: pad odd sizes by repeating the edge.
  const int64_t pad_h = frames.size(1) % 2, pad_w = frames.size(2) % 2;
  if (pad_h || pad_w) {
    frames = torch::replication_pad2d(frames_in.cpu().permute({0, 3, 1, 2}).to(torch::kFloat32), {0, pad_w, 0, pad_h})
                 .to(torch::kUInt8)
                 .permute({0, 2, 3, 1})
                 .contiguous();
  }
  const int height = static_cast<int>(frames.size(1)), width = static_cast<int>(frames.size(2));

  av::quiet_logging();
  const auto temp = temp_path_for(file);
  const DeterministicHeapScope deterministic_heap;  // before the first allocation of FFmpeg or x264
  Output out;
  CVX_AV(avformat_alloc_output_context2(&out.ctx, nullptr, "mp4", temp.c_str()));
  const AVCodec* codec = avcodec_find_encoder_by_name(options.codec.c_str());
  CVX_CHECK_AS(SystemError, codec != nullptr, "write_video: FFmpeg has no encoder '", options.codec,
               "' (install an FFmpeg built with it, e.g. libx264)");
  AVStream* stream = avformat_new_stream(out.ctx, nullptr);
  CVX_CHECK_AS(SystemError, stream != nullptr, "write_video: cannot add a stream to ", file.string());
  av::CodecContext enc(avcodec_alloc_context3(codec));
  enc->width = width;
  enc->height = height;
  enc->pix_fmt = AV_PIX_FMT_YUV420P;
  enc->time_base = AVRational{1, options.fps};
  enc->framerate = AVRational{options.fps, 1};
  enc->gop_size = 12;
  if (out.ctx->oformat->flags & AVFMT_GLOBALHEADER) enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  av_opt_set(enc->priv_data, "preset", options.preset.c_str(), 0);
  av_opt_set(enc->priv_data, "crf", std::to_string(options.crf).c_str(), 0);
  CVX_AV(avcodec_open2(enc.get(), codec, nullptr));
  CVX_AV(avcodec_parameters_from_context(stream->codecpar, enc.get()));
  stream->time_base = enc->time_base;
  stream->avg_frame_rate = enc->framerate;

  try {
    CVX_AV(avio_open(&out.ctx->pb, temp.c_str(), AVIO_FLAG_WRITE));
    out.opened = true;
    CVX_AV(avformat_write_header(out.ctx, nullptr));
    av::Frame yuv(av_frame_alloc());
    yuv->format = AV_PIX_FMT_YUV420P;
    yuv->width = width;
    yuv->height = height;
    CVX_AV(av_frame_get_buffer(yuv.get(), 0));
    av::Sws sws(sws_getContext(width, height, AV_PIX_FMT_RGB24, width, height, AV_PIX_FMT_YUV420P, SWS_BICUBIC, nullptr,
                               nullptr, nullptr));
    CVX_CHECK_AS(SystemError, sws != nullptr, "write_video: cannot set up the RGB -> YUV conversion");
    for (int64_t i = 0; i < frames.size(0); ++i) {
      CVX_AV(av_frame_make_writable(yuv.get()));
      const uint8_t* src[1] = {frames[i].data_ptr<uint8_t>()};
      const int src_stride[1] = {3 * width};
      sws_scale(sws.get(), src, src_stride, 0, height, yuv->data, yuv->linesize);
      yuv->pts = i;
      encode(enc.get(), stream, out.ctx, yuv.get());
    }
    encode(enc.get(), stream, out.ctx, nullptr);
    CVX_AV(av_write_trailer(out.ctx));
    avio_closep(&out.ctx->pb);
    out.opened = false;
    std::filesystem::rename(temp, file);
    fsync_directory(file.parent_path());
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(temp, ec);
    throw;
  }
}

}  // namespace cvx
