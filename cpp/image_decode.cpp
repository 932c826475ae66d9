#include "image_decode.hpp"

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

namespace fgm {
namespace {

// a decoder's answer: empty on success, kTooLarge + the pixel count, a channel-layout name, or a message
constexpr const char* kTooLarge = "too large:";

std::string too_large(uint64_t pixels) { return kTooLarge + std::to_string(pixels); }

bool over_limit(uint64_t width, uint64_t height) { return width * height > kMaxImagePixels; }

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

std::string decode_jpeg(std::FILE* file, Image& image) {
  jpeg_decompress_struct info;
  JpegErrors errors;
  info.err = jpeg_std_error(&errors.manager);
  errors.manager.error_exit = jpeg_fail;
  errors.manager.emit_message = jpeg_message;
  errors.message[0] = '\0';
  if (setjmp(errors.jump)) {
    // PIL refuses an oversized claim as soon as it has read the frame header, whatever follows it
    uint64_t pixels = static_cast<uint64_t>(info.image_width) * info.image_height;
    jpeg_destroy_decompress(&info);
    if (pixels > kMaxImagePixels) return too_large(pixels);
    return errors.message[0] ? errors.message : "libjpeg failed";
  }
  jpeg_create_decompress(&info);
  jpeg_stdio_src(&info, file);
  jpeg_read_header(&info, TRUE);
  if (over_limit(info.image_width, info.image_height)) {
    uint64_t pixels = static_cast<uint64_t>(info.image_width) * info.image_height;
    jpeg_destroy_decompress(&info);
    return too_large(pixels);
  }
  if (info.out_color_space == JCS_CMYK) {
    jpeg_destroy_decompress(&info);
    return "CMYK";
  }
  jpeg_start_decompress(&info);
  image.width = static_cast<int>(info.output_width);
  image.height = static_cast<int>(info.output_height);
  image.channels = info.output_components;
  try {
    image.pixels.resize(static_cast<size_t>(image.width) * image.height * image.channels);
  } catch (const std::bad_alloc&) {
    jpeg_destroy_decompress(&info);
    return "out of memory";
  }
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
  std::FILE* file;
  std::jmp_buf jump;
  char message[256];
};

void png_fail(png_structp png, png_const_charp message) {
  auto* source = static_cast<PngSource*>(png_get_error_ptr(png));
  std::snprintf(source->message, sizeof source->message, "%s", message);
  std::longjmp(source->jump, 1);
}

void png_warn(png_structp, png_const_charp) {}

void png_read_file(png_structp png, png_bytep out, png_size_t length) {
  auto* source = static_cast<PngSource*>(png_get_io_ptr(png));
  if (std::fread(out, 1, length, source->file) != length) png_error(png, "image file is truncated");
}

// Returns an empty string on success, "LA"/"RGBA" for images with alpha, else libpng's message.
std::string decode_png(std::FILE* file, Image& image) {
  PngSource source{file, {}, {0}};
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
  png_set_read_fn(png, &source, png_read_file);
  // libpng's own default limit (1000000 columns or rows) would refuse some images under the pixel
  // limit that PIL decodes: the pixel limit below is the one that applies
  png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
  png_read_info(png, info);
  uint64_t width = png_get_image_width(png, info), height = png_get_image_height(png, info);
  if (over_limit(width, height)) {
    png_destroy_read_struct(&png, &info, nullptr);
    return too_large(width * height);
  }
  int color_type = png_get_color_type(png, info);
  int bit_depth = png_get_bit_depth(png, info);
  if (color_type == PNG_COLOR_TYPE_GRAY_ALPHA || color_type == PNG_COLOR_TYPE_RGB_ALPHA) {
    png_destroy_read_struct(&png, &info, nullptr);
    return color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? "LA" : "RGBA";
  }
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    // PIL converts a palette image with tRNS to RGB without its transparency; libpng's palette
    // expansion adds an alpha channel from tRNS, which is stripped again
    png_set_palette_to_rgb(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_strip_alpha(png);
  }
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (bit_depth == 16) png_set_strip_16(png);  // keeps the high byte
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  image.width = static_cast<int>(png_get_image_width(png, info));
  image.height = static_cast<int>(png_get_image_height(png, info));
  image.channels = png_get_channels(png, info);
  size_t row_bytes = png_get_rowbytes(png, info);
  if (row_bytes != static_cast<size_t>(image.width) * image.channels) png_error(png, "unexpected row layout");
  bool allocated = true;
  try {
    image.pixels.resize(row_bytes * image.height);
    rows = new std::vector<png_bytep>(image.height);
  } catch (const std::bad_alloc&) {
    allocated = false;  // png_error longjmps: not from inside the handler
  }
  if (!allocated) png_error(png, "out of memory");
  for (int y = 0; y < image.height; ++y) (*rows)[y] = image.pixels.data() + y * row_bytes;
  png_read_image(png, rows->data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  delete rows;
  return "";
}

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};

}  // namespace

Image decode_image_file(const std::string& path) {
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (!file) throw ImageError("cannot open the file");
  uint8_t head[8] = {0};
  size_t head_size = std::fread(head, 1, sizeof head, file.get());
  if (std::ferror(file.get()) || std::fseek(file.get(), 0, SEEK_SET) != 0) throw ImageError("cannot read the file");

  static const uint8_t kPngSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  bool is_png = head_size >= 8 && std::memcmp(head, kPngSignature, 8) == 0;
  bool is_jpeg = head_size >= 3 && head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF;
  if (!is_png && !is_jpeg) throw ImageError("cannot decode image (not a JPEG or PNG file)");

  Image image;
  std::string problem;
  try {
    problem = is_png ? decode_png(file.get(), image) : decode_jpeg(file.get(), image);
  } catch (const std::bad_alloc&) {
    throw ImageError(kOutOfMemory);
  }
  if (problem == "out of memory") throw ImageError(kOutOfMemory);
  if (problem.rfind(kTooLarge, 0) == 0)
    throw ImageError("image has " + problem.substr(std::strlen(kTooLarge)) + " pixels, more than the limit of " +
                     std::to_string(kMaxImagePixels) + " (PIL's decompression-bomb limit)");
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
