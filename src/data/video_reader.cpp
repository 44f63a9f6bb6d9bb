#include "cvx/data/video_reader.h"

#include <cmath>
#include <unordered_map>

#include "av_util.h"
#include "cvx/core/checked_call.h"
#include "cvx/core/error.h"
#include "cvx/core/parallel.h"

extern "C" {
#include <libavutil/display.h>
}

namespace cvx {

struct VideoReader::Decoded {
  std::vector<av::Frame> frames;  // the decoder's output, presentation order
};

namespace {

// Clockwise degrees a player turns the coded frames by, from the stream's display matrix
// (the rule of ffmpeg's own autorotate: the matrix angle is counter-clockwise).
int display_rotation(const AVStream* stream) {
  const uint8_t* matrix = av_stream_get_side_data(stream, AV_PKT_DATA_DISPLAYMATRIX, nullptr);
  if (matrix == nullptr) return 0;
  const double angle = av_display_rotation_get(reinterpret_cast<const int32_t*>(matrix));
  if (std::isnan(angle)) return 0;
  const long quarter = std::lround(-angle / 90.0);
  return static_cast<int>(((quarter % 4) + 4) % 4) * 90;
}

double average_fps(const AVStream* stream, const std::vector<double>& timestamps) {
  const AVRational rate = stream->avg_frame_rate;
  if (rate.num > 0 && rate.den > 0) return av_q2d(rate);
  if (timestamps.size() >= 2) return static_cast<double>(timestamps.size() - 1) / timestamps.back();
  const AVRational real = stream->r_frame_rate;
  return real.num > 0 && real.den > 0 ? av_q2d(real) : 0.0;
}

}  // namespace

VideoReader::VideoReader(const std::filesystem::path& file, const VideoReaderOptions& options)
    : file_(file), decoded_(std::make_unique<Decoded>()) {
  CVX_CHECK_AS(ConfigError, options.threads >= 0 && options.max_frames >= 0,
               "video reader: threads and max_frames must be >= 0, got ", options.threads, " and ", options.max_frames);
  threads_ = options.threads;
  auto in = av::open_decoding_input(file, "video", options.threads);
  const AVStream* stream = in.video_stream();
  const double time_base = av_q2d(stream->time_base);
  std::vector<int64_t> pts;        // in stream time base, AV_NOPTS_VALUE where unknown
  std::vector<int64_t> durations;  // likewise, 0 where unknown

  av::Packet packet(av_packet_alloc());
  av::Frame frame(av_frame_alloc());
  auto receive_all = [&] {
    while (true) {
      const int rc = avcodec_receive_frame(in.decoder.get(), frame.get());
      if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return;
      CVX_CHECK_AS(FormatError, rc >= 0, "cannot decode video ", file.string(), ": ", av_error_string(rc));
      pts.push_back(frame->best_effort_timestamp);
      durations.push_back(frame->pkt_duration);
      decoded_->frames.emplace_back(av_frame_alloc());
      av_frame_move_ref(decoded_->frames.back().get(), frame.get());
    }
  };
  const auto enough = [&] {
    return options.max_frames > 0 && static_cast<int64_t>(decoded_->frames.size()) >= options.max_frames;
  };
  while (!enough()) {
    const int rc = av_read_frame(in.input.get(), packet.get());
    if (rc == AVERROR_EOF) break;
    CVX_CHECK_AS(FormatError, rc >= 0, "cannot read video ", file.string(), ": ", av_error_string(rc));
    if (packet->stream_index == in.stream) {
      const int sent = avcodec_send_packet(in.decoder.get(), packet.get());
      av_packet_unref(packet.get());
      CVX_CHECK_AS(FormatError, sent >= 0, "cannot decode video ", file.string(), ": ", av_error_string(sent));
      receive_all();
    } else {
      av_packet_unref(packet.get());
    }
  }
  CVX_AV(avcodec_send_packet(in.decoder.get(), nullptr));  // flush the decoder's delayed frames
  receive_all();
  if (enough()) {
    decoded_->frames.resize(static_cast<size_t>(options.max_frames));
    pts.resize(decoded_->frames.size());
    durations.resize(decoded_->frames.size());
  }
  CVX_CHECK_AS(FormatError, !decoded_->frames.empty(), "video ", file.string(), " has no decodable frames");

  // Seconds from the first frame. Missing or non-increasing times (broken muxers) continue the
  // previous frame at the stream's nominal rate, so timestamps stay strictly increasing.
  const AVRational guess = av_guess_frame_rate(in.input.get(), in.video_stream(), nullptr);
  const double nominal_step = guess.num > 0 && guess.den > 0 ? 1.0 / av_q2d(guess) : 1.0 / 25;
  const int64_t start = pts[0] == AV_NOPTS_VALUE ? 0 : pts[0];
  for (size_t i = 0; i < pts.size(); ++i) {
    double t = pts[i] == AV_NOPTS_VALUE ? -1.0 : (pts[i] - start) * time_base;
    if (i == 0)
      t = 0;
    else if (!(t > timestamps_.back()))
      t = timestamps_.back() + nominal_step;
    timestamps_.push_back(t);
  }

  const AVFrame& first = *decoded_->frames.front();
  info_.frame_count = static_cast<int64_t>(decoded_->frames.size());
  info_.fps = average_fps(stream, timestamps_);
  const double last_duration = durations.back() > 0 ? durations.back() * time_base
                               : info_.fps > 0      ? 1.0 / info_.fps
                                                    : nominal_step;
  info_.duration = timestamps_.back() + last_duration;
  info_.rotation = display_rotation(stream);
  const bool swapped = info_.rotation % 180 != 0;
  info_.width = swapped ? first.height : first.width;
  info_.height = swapped ? first.width : first.height;
  info_.codec = avcodec_get_name(stream->codecpar->codec_id);
}

VideoReader::~VideoReader() = default;
VideoReader::VideoReader(VideoReader&&) noexcept = default;
VideoReader& VideoReader::operator=(VideoReader&&) noexcept = default;

torch::Tensor VideoReader::frames(const std::vector<int64_t>& indices) const {
  return frames(indices, info_.height, info_.width);
}

torch::Tensor VideoReader::frames(const std::vector<int64_t>& indices, int64_t out_height, int64_t out_width) const {
  CVX_CHECK_AS(ConfigError, out_height > 0 && out_width > 0, "cannot scale ", file_.string(), " to ", out_height, "x",
               out_width);
  // swscale works on the coded frame: a quarter turn swaps the sides it must produce.
  const bool swapped = info_.rotation % 180 != 0;
  const int coded_width = static_cast<int>(swapped ? out_height : out_width);
  const int coded_height = static_cast<int>(swapped ? out_width : out_height);
  auto out = torch::empty({static_cast<int64_t>(indices.size()), out_height, out_width, 3}, torch::kUInt8);
  std::unordered_map<int64_t, int64_t> first_row;     // frame index -> first row of `out` holding it
  std::vector<std::pair<int64_t, int64_t>> distinct;  // (frame index, row) to convert
  for (size_t row = 0; row < indices.size(); ++row) {
    const int64_t index = indices[row];
    CVX_CHECK_AS(ConfigError, index >= 0 && index < info_.frame_count, "frame index ", index, " out of range for ",
                 file_.string(), " (", info_.frame_count, " frames)");
    if (!first_row.emplace(index, static_cast<int64_t>(row)).second) continue;
    const AVFrame& frame = *decoded_->frames[index];
    // A stream may change size midway (rare; legal in some codecs): the clip keeps the first size.
    CVX_CHECK_AS(
        FormatError, frame.width == decoded_->frames.front()->width && frame.height == decoded_->frames.front()->height,
        "video ", file_.string(), " changes frame size at frame ", index, " (", frame.width, "x", frame.height, ")");
    distinct.emplace_back(index, static_cast<int64_t>(row));
  }
  // The conversion (and scaling) costs about as much as decoding: frames are spread over torch's
  // threads, each with its own swscale context (one context is not safe to share).
  parallel_chunks(
      static_cast<int64_t>(distinct.size()), 1,
      [&](int64_t begin, int64_t end) {
        av::Sws sws;
        for (int64_t k = begin; k < end; ++k) {
          const auto [index, row] = distinct[static_cast<size_t>(k)];
          const AVFrame& frame = *decoded_->frames[index];
          if (info_.rotation == 0) {
            av::frame_to_rgb_into(frame, sws, file_, coded_width, coded_height, out[row].data_ptr<uint8_t>());
            continue;
          }
          const auto rgb = av::frame_to_rgb(frame, sws, file_, coded_width, coded_height);  // [h, w, 3] as coded
          // torch::rot90 turns counter-clockwise for positive k.
          out[row].copy_(torch::rot90(rgb, -info_.rotation / 90, {0, 1}));
        }
      },
      threads_);
  for (size_t row = 0; row < indices.size(); ++row) {
    const int64_t first = first_row.at(indices[row]);
    if (first != static_cast<int64_t>(row)) out[static_cast<int64_t>(row)].copy_(out[first]);
  }
  return out;  // [len(indices), H, W, 3]
}

torch::Tensor VideoReader::all_frames() const {
  std::vector<int64_t> indices(static_cast<size_t>(info_.frame_count));
  for (size_t i = 0; i < indices.size(); ++i) indices[i] = static_cast<int64_t>(i);
  return frames(indices);
}

}  // namespace cvx
