#include "image_decode.hpp"

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

namespace fgm {
namespace {

// ---- JPEG ------------------------------------------------------------------------------------------
// libjpeg reports errors through error_exit, which must not return: it longjmps back to decode_jpeg.
// Only trivially destructible objects live between setjmp and the calls that may jump.

struct JpegErrors {
  jpeg_error_mgr manager;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr info) {
  auto* errors = reinterpret_cast<JpegErrors*>(info->err);
  (*info->err->format_message)(info, errors->message);
  std::longjmp(errors->jump, 1);
}

// Warnings are ignored (as PIL does), except running out of data: PIL refuses truncated files,
// where libjpeg would pad them with gray and carry on.
void jpeg_message(j_common_ptr info, int level) {
  if (level < 0 && info->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(info);
}

// Returns an empty string on success, else libjpeg's message.
std::string decode_jpeg(const std::vector<uint8_t>& data, Image& image) {
  jpeg_decompress_struct info;
  JpegErrors errors;
  info.err = jpeg_std_error(&errors.manager);
  errors.manager.error_exit = jpeg_fail;
  errors.manager.emit_message = jpeg_message;
  errors.message[0] = '\0';
  if (setjmp(errors.jump)) {
    jpeg_destroy_decompress(&info);
    return errors.message[0] ? errors.message : "libjpeg failed";
  }
  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, data.data(), static_cast<unsigned long>(data.size()));
  jpeg_read_header(&info, TRUE);
  if (info.out_color_space == JCS_CMYK) {
    jpeg_destroy_decompress(&info);
    return "CMYK";
  }
  jpeg_start_decompress(&info);
  image.width = static_cast<int>(info.output_width);
  image.height = static_cast<int>(info.output_height);
  image.channels = info.output_components;
  image.pixels.resize(static_cast<size_t>(image.width) * image.height * image.channels);
  size_t row_bytes = static_cast<size_t>(image.width) * image.channels;
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = image.pixels.data() + info.output_scanline * row_bytes;
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  return "";
}

// ---- PNG -------------------------------------------------------------------------------------------

struct PngSource {
  const std::vector<uint8_t>* data;
  size_t offset;
  std::jmp_buf jump;
  char message[256];
};

void png_fail(png_structp png, png_const_charp message) {
  auto* source = static_cast<PngSource*>(png_get_error_ptr(png));
  std::snprintf(source->message, sizeof source->message, "%s", message);
  std::longjmp(source->jump, 1);
}

void png_warn(png_structp, png_const_charp) {}

void png_read_memory(png_structp png, png_bytep out, png_size_t length) {
  auto* source = static_cast<PngSource*>(png_get_io_ptr(png));
  if (source->offset + length > source->data->size()) png_error(png, "image file is truncated");
  std::memcpy(out, source->data->data() + source->offset, length);
  source->offset += length;
}

// Returns an empty string on success, "LA"/"RGBA" for images with alpha, else libpng's message.
std::string decode_png(const std::vector<uint8_t>& data, Image& image) {
  PngSource source{&data, 0, {}, {0}};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &source, png_fail, png_warn);
  if (png == nullptr) return "out of memory";
  png_infop info = png_create_info_struct(png);
  // heap-held so a longjmp skips no destructor; volatile as it changes between setjmp and longjmp
  std::vector<png_bytep>* volatile rows = nullptr;
  if (setjmp(source.jump)) {
    png_destroy_read_struct(&png, &info, nullptr);
    delete rows;
    return source.message;
  }
  if (info == nullptr) png_error(png, "out of memory");
  png_set_read_fn(png, &source, png_read_memory);
  png_read_info(png, info);
  int color_type = png_get_color_type(png, info);
  int bit_depth = png_get_bit_depth(png, info);
  if (color_type == PNG_COLOR_TYPE_GRAY_ALPHA || color_type == PNG_COLOR_TYPE_RGB_ALPHA) {
    png_destroy_read_struct(&png, &info, nullptr);
    return color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? "LA" : "RGBA";
  }
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);  // tRNS is not expanded to alpha
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (bit_depth == 16) png_set_strip_16(png);  // keeps the high byte
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  image.width = static_cast<int>(png_get_image_width(png, info));
  image.height = static_cast<int>(png_get_image_height(png, info));
  image.channels = png_get_channels(png, info);
  size_t row_bytes = png_get_rowbytes(png, info);
  if (row_bytes != static_cast<size_t>(image.width) * image.channels) png_error(png, "unexpected row layout");
  image.pixels.resize(row_bytes * image.height);
  rows = new std::vector<png_bytep>(image.height);
  for (int y = 0; y < image.height; ++y) (*rows)[y] = image.pixels.data() + y * row_bytes;
  png_read_image(png, rows->data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  delete rows;
  return "";
}

}  // namespace

Image decode_image_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw ImageError("cannot open the file");
  std::vector<uint8_t> data((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (file.bad()) throw ImageError("cannot read the file");

  static const uint8_t kPngSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  bool is_png = data.size() >= 8 && std::memcmp(data.data(), kPngSignature, 8) == 0;
  bool is_jpeg = data.size() >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;
  if (!is_png && !is_jpeg) throw ImageError("cannot decode image (not a JPEG or PNG file)");

  Image image;
  std::string problem = is_png ? decode_png(data, image) : decode_jpeg(data, image);
  if (problem == "LA" || problem == "RGBA" || problem == "CMYK") {
    int channels = problem == "LA" ? 2 : 4;
    throw ImageError("image has " + std::to_string(channels) + " channels (" + problem +
                     "); the model takes grayscale or RGB images: remove the alpha channel or convert it to "
                     "RGB first");
  }
  if (!problem.empty()) throw ImageError("cannot decode image (" + problem + ")");
  if (image.channels != 1 && image.channels != 3)
    throw ImageError("image has " + std::to_string(image.channels) + " channels; the model takes grayscale or RGB "
                     "images");
  return image;
}

}  // namespace fgm
