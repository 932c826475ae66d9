// JPEG and PNG files -> 8-bit pixels, with the rules of fastgradmix/deploy/image_inputs.py (PIL there):
// palette PNGs expand to RGB (their tRNS transparency ignored), 1/2/4-bit gray expands to 8 bits,
// 16-bit samples keep their high byte, tRNS and gamma are ignored; JPEGs decode with libjpeg's defaults
// (islow DCT, fancy upsampling). Files are streamed, not read whole, and an image with more pixels than
// kMaxImagePixels is refused from its header, before any pixel memory is allocated.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace fgm {

// PIL's Image.MAX_IMAGE_PIXELS (its decompression-bomb limit), which the Python predictor and the
// dataset readers apply (fastgradmix/data/readers/pixel_limit.py); tests/test_native.py checks the two agree.
constexpr uint64_t kMaxImagePixels = 89478485;

// image_inputs.OUT_OF_MEMORY: an image that needs more memory than there is, its own problem line
constexpr const char* kOutOfMemory = "out of memory while decoding or resizing the image";

// Why an image could not be used; the message does not repeat the path.
class ImageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Image {
  int width = 0;
  int height = 0;
  int channels = 0;             // 1 (gray) or 3 (RGB) after a successful decode
  std::vector<uint8_t> pixels;  // (height, width, channels), row-major
};

// Decodes by content (PNG signature or JPEG SOI marker), whatever the file is called. Throws
// ImageError for an unreadable file, an image over the pixel limit, an undecodable or truncated image,
// images with alpha or CMYK (2 or 4 channels: no agreed background), and when memory runs out.
Image decode_image_file(const std::string& path);

}  // namespace fgm
