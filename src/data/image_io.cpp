#include "cvx/data/image_io.h"

#include "av_util.h"
#include "cvx/core/checked_call.h"
#include "cvx/core/error.h"
#include "cvx/io/atomic_file.h"

namespace cvx {

torch::Tensor read_image(const std::filesystem::path& file) {
  auto in = av::open_decoding_input(file, "image");
  av::Packet packet(av_packet_alloc());
  av::Frame frame(av_frame_alloc());
  bool got = false;
  while (!got && av_read_frame(in.input.get(), packet.get()) >= 0) {
    if (packet->stream_index == in.stream && avcodec_send_packet(in.decoder.get(), packet.get()) >= 0)
      got = avcodec_receive_frame(in.decoder.get(), frame.get()) >= 0;
    av_packet_unref(packet.get());
  }
  if (!got) {  // decoders with delay give their frame on flush
    avcodec_send_packet(in.decoder.get(), nullptr);
    got = avcodec_receive_frame(in.decoder.get(), frame.get()) >= 0;
  }
  CVX_CHECK_AS(FormatError, got, "cannot decode image ", file.string());
  av::Sws sws;
  return av::frame_to_rgb(*frame, sws, file);  // [H, W, 3]
}

std::string encode_png(const torch::Tensor& image_in) {
  CVX_CHECK_AS(ConfigError, image_in.dim() == 3 && image_in.size(2) == 3 && image_in.scalar_type() == torch::kUInt8,
               "encode_png: expected an [H, W, 3] uint8 image, got ", image_in.sizes(), " ", image_in.scalar_type());
  const auto image = image_in.cpu().contiguous();
  const AVCodec* codec = avcodec_find_encoder(AV_CODEC_ID_PNG);
  CVX_CHECK_AS(SystemError, codec != nullptr, "FFmpeg has no PNG encoder");
  av::CodecContext enc(avcodec_alloc_context3(codec));
  enc->width = static_cast<int>(image.size(1));
  enc->height = static_cast<int>(image.size(0));
  enc->pix_fmt = AV_PIX_FMT_RGB24;
  enc->time_base = AVRational{1, 1};
  CVX_AV(avcodec_open2(enc.get(), codec, nullptr));
  av::Frame frame(av_frame_alloc());
  frame->format = AV_PIX_FMT_RGB24;
  frame->width = enc->width;
  frame->height = enc->height;
  CVX_AV(av_frame_get_buffer(frame.get(), 0));
  for (int y = 0; y < enc->height; ++y)
    std::memcpy(frame->data[0] + y * frame->linesize[0], image[y].data_ptr<uint8_t>(), 3 * enc->width);
  CVX_AV(avcodec_send_frame(enc.get(), frame.get()));
  CVX_AV(avcodec_send_frame(enc.get(), nullptr));
  av::Packet packet(av_packet_alloc());
  std::string bytes;
  while (avcodec_receive_packet(enc.get(), packet.get()) >= 0) {
    bytes.append(reinterpret_cast<const char*>(packet->data), packet->size);
    av_packet_unref(packet.get());
  }
  CVX_CHECK_AS(SystemError, !bytes.empty(), "PNG encoding of a ", enc->width, "x", enc->height,
               " image produced no data");
  return bytes;
}

void write_png(const std::filesystem::path& file, const torch::Tensor& image) {
  CVX_CHECK_AS(ConfigError, image.dim() == 3 && image.size(2) == 3 && image.scalar_type() == torch::kUInt8,
               "write_png(", file.string(), "): expected [H, W, 3] uint8, got ", image.sizes(), " ",
               image.scalar_type());
  write_file_atomically(file, encode_png(image));
}

}  // namespace cvx
