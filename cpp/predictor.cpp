#include "predictor.hpp"

#include <cstdio>
#include <limits>
#include <regex>
#include <utility>

#include <ATen/ops/_upsample_bilinear2d_aa.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/full.h>
#include <ATen/ops/tensor.h>
#include <c10/util/Exception.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include "json.hpp"
#include "printable.hpp"

namespace fgm {
namespace {

// "%.6f", as Python's f"{value:.6f}": up to 309 digits before the point for a threshold near 1e308
std::string fixed6(double value) {
  int length = std::snprintf(nullptr, 0, "%.6f", value);
  std::string text(static_cast<size_t>(length) + 1, '\0');
  std::snprintf(text.data(), text.size(), "%.6f", value);
  text.resize(static_cast<size_t>(length));
  return text;
}

constexpr const char* kInputShapeKey = "fastgradmix.input_shape";  // program.INPUT_SHAPE_KEY
constexpr const char* kFeatureDimKey = "fastgradmix.feature_dim";

std::string first_line(const std::string& text) {
  auto end = text.find('\n');
  return text.substr(0, end);
}

}  // namespace

std::string format_text(const Prediction& p) {
  return printable(p.path) + "\t" + p.label() + "\tscore=" + fixed6(p.score) + "\tthreshold=" + fixed6(p.threshold);
}

std::string format_json(const Prediction& p) {
  return "{\"path\": " + json::quote(p.path) + ", \"prediction\": " + json::quote(p.label()) +
         ", \"known\": " + (p.known() ? "true" : "false") + ", \"nearest_class\": " + json::quote(p.nearest_class) +
         ", \"score\": " + json::python_float(p.score) + ", \"threshold\": " + json::python_float(p.threshold) + "}";
}

Image to_channels(const Image& image, int channels) {
  if (image.channels == channels) return image;
  Image out{image.width, image.height, channels, {}};
  size_t count = static_cast<size_t>(image.width) * image.height;
  out.pixels.resize(count * channels);
  if (image.channels == 3 && channels == 1) {
    for (size_t i = 0; i < count; ++i) {
      const uint8_t* rgb = &image.pixels[3 * i];
      out.pixels[i] = static_cast<uint8_t>((19595u * rgb[0] + 38470u * rgb[1] + 7471u * rgb[2] + 32768u) >> 16);
    }
  } else {  // 1 -> 3
    for (size_t i = 0; i < count; ++i)
      out.pixels[3 * i] = out.pixels[3 * i + 1] = out.pixels[3 * i + 2] = image.pixels[i];
  }
  return out;
}

at::Tensor preprocess(const Image& decoded, const Preprocessing& prep) {
  Image image = to_channels(decoded, prep.channels);
  // (H, W, C) uint8 -> contiguous (1, C, H, W), as deploy/image_inputs.to_channels lays it out
  at::Tensor pixels = at::from_blob(image.pixels.data(), {image.height, image.width, image.channels}, at::kByte)
                          .permute({2, 0, 1})
                          .contiguous()
                          .unsqueeze(0);
  at::Tensor x = pixels.to(at::kFloat).div_(255);
  if (image.height != prep.image_size || image.width != prep.image_size)
    x = at::_upsample_bilinear2d_aa(x, {prep.image_size, prep.image_size}, /*align_corners=*/false);
  at::Tensor mean = at::tensor(prep.mean, at::kFloat).view({1, -1, 1, 1});
  at::Tensor std = at::tensor(prep.std, at::kFloat).view({1, -1, 1, 1});
  return x.sub(mean).div(std);
}

at::Tensor class_topk_scores(const at::Tensor& features, const at::Tensor& bank, const at::Tensor& bank_labels,
                             int num_classes, int k) {
  at::Tensor similarity = features.to(at::kFloat).matmul(bank.t());  // (T, B)
  at::Tensor scores = at::full({features.size(0), num_classes}, -std::numeric_limits<float>::infinity(),
                               at::kFloat);  // (T, K)
  for (int c = 0; c < num_classes; ++c) {
    at::Tensor members = bank_labels.eq(c).nonzero().flatten();  // (n_c,)
    if (members.numel() == 0) continue;
    int64_t top = std::min<int64_t>(k, members.numel());
    at::Tensor top_values = std::get<0>(similarity.index_select(1, members).topk(top, 1));  // (T, top)
    scores.select(1, c).copy_(top_values.sum(1));
  }
  return scores;
}

// program.check_program_shapes: the program's recorded input (C, S, S) and feature dimension must be
// model.json's, or it would index an input of another size out of bounds
static void check_program_shapes(torch::inductor::AOTIModelPackageLoader& program, const std::string& path,
                          int channels, int image_size, int64_t feature_dim) {
  auto metadata = program.get_metadata();
  std::string shape_text = metadata.count(kInputShapeKey) ? metadata[kInputShapeKey] : "";
  std::string dim_text = metadata.count(kFeatureDimKey) ? metadata[kFeatureDimKey] : "";
  static const std::regex kShape(R"((\d{1,9}),(\d{1,9}),(\d{1,9}))"), kDim(R"(\d{1,9})");
  std::smatch shape;
  if (!std::regex_match(shape_text, shape, kShape) || !std::regex_match(dim_text, kDim))
    throw UserError(printable(path) + " does not record the input it was compiled for (an export by an older "
                    "fastgradmix); export the model again");
  int64_t c = std::stoll(shape[1]), h = std::stoll(shape[2]), w = std::stoll(shape[3]), d = std::stoll(dim_text);
  if (c != channels || h != image_size || w != image_size || d != feature_dim)
    throw UserError(printable(path) + " takes " + std::to_string(c) + " x " + std::to_string(h) + " x " +
                    std::to_string(w) + " inputs and gives " + std::to_string(d) + " features, but model.json says "
                    "channels " + std::to_string(channels) + ", image_size " + std::to_string(image_size) +
                    " and bank feature_dim " + std::to_string(feature_dim) + "; export the model again");
}

Predictor::Predictor(ModelFolder model) : model_(std::move(model)) {
  std::string path = model_.program_path("cpu");
  try {
    program_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path);
  } catch (const c10::Error& error) {
    throw UserError("cannot load the compiled program " + printable(path) + " (" +
                    first_line(error.what_without_backtrace()) + "); export the model again");
  } catch (const std::exception& error) {
    throw UserError("cannot load the compiled program " + printable(path) + " (" + first_line(error.what()) +
                    "); export the model again");
  }
  check_program_shapes(*program_, path, model_.preprocessing.channels, model_.preprocessing.image_size,
                       model_.bank_features.size(1));
}

Predictor::~Predictor() = default;

at::Tensor Predictor::prepare(const std::string& path) const {
  try {
    return preprocess(decode_image_file(path), model_.preprocessing);
  } catch (const std::bad_alloc&) {
    throw ImageError(kOutOfMemory);
  } catch (const c10::Error& error) {  // libtorch's CPU allocator: "DefaultCPUAllocator: can't allocate memory"
    if (std::string(error.what()).find("can't allocate memory") != std::string::npos) throw ImageError(kOutOfMemory);
    throw;
  }
}

std::vector<Prediction> Predictor::predict(const std::vector<std::string>& paths,
                                          const std::vector<at::Tensor>& inputs) {
  at::Tensor features = program_->run({at::cat(inputs)}).at(0);  // (N, D)
  at::Tensor scores = class_topk_scores(features, model_.bank_features, model_.bank_labels,
                                        static_cast<int>(model_.class_names.size()), model_.topk);  // (N, K)
  auto [best_score, best_class] = scores.max(1);
  std::vector<Prediction> predictions;
  for (size_t i = 0; i < paths.size(); ++i) {
    int64_t index = best_class[static_cast<int64_t>(i)].item<int64_t>();
    predictions.push_back({paths[i], model_.class_names.at(index),
                           static_cast<double>(best_score[static_cast<int64_t>(i)].item<float>()), model_.threshold});
  }
  return predictions;
}

}  // namespace fgm
