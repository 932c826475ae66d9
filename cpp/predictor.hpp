// The native open-set predictor: decoded images -> the model input (the evaluation's eval_view), the
// AOTInductor program -> L2-normalised features, top-k class similarity against the bank -> a known
// class or "unknown". Mirrors fastgradmix/predict.py line for line.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "image_decode.hpp"
#include "model_folder.hpp"

namespace torch::inductor {
class AOTIModelPackageLoader;
}

namespace fgm {

struct Prediction {
  std::string path;
  std::string nearest_class;  // the best-scoring known class, also when the image is called unknown
  double score = 0.0;         // the best class's top-k similarity sum
  double threshold = 0.0;
  bool known() const { return score >= threshold; }
  std::string label() const { return known() ? nearest_class : "unknown"; }
};

// PATH<TAB>LABEL<TAB>score=S<TAB>threshold=T, as fastgradmix.predict prints it.
std::string format_text(const Prediction& prediction);
// One JSON object, byte-identical to fastgradmix.predict --json.
std::string format_json(const Prediction& prediction);

// uint8 (H, W, 1 or 3) -> uint8 (H, W, channels): RGB -> ITU-R 601 luma in PIL's integer form for a
// grayscale model, gray replicated for an RGB model.
Image to_channels(const Image& image, int channels);

// (1, C, S, S) float32: /255, antialiased bilinear resize (only when the size differs), (x - mean) / std.
at::Tensor preprocess(const Image& image, const Preprocessing& preprocessing);

// Per-class top-k similarity sums (T, K) float32 of L2-normalised features (T, D) against the bank;
// a class without bank entries scores -inf (as fastgradmix.evaluation.topk_similarity.class_topk_scores).
at::Tensor class_topk_scores(const at::Tensor& features, const at::Tensor& bank, const at::Tensor& bank_labels,
                             int num_classes, int k);

class Predictor {
 public:
  explicit Predictor(ModelFolder model);  // loads the CPU program; throws UserError
  ~Predictor();
  const ModelFolder& model() const { return model_; }
  // An image file -> its model input (1, C, S, S), made as soon as the image is read so a pending batch
  // holds inputs of the model's size; throws ImageError (running out of memory included: kOutOfMemory).
  at::Tensor prepare(const std::string& path) const;
  // Prepared inputs, each (1, C, S, S) -> one prediction per path.
  std::vector<Prediction> predict(const std::vector<std::string>& paths, const std::vector<at::Tensor>& inputs);

 private:
  ModelFolder model_;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> program_;
};

}  // namespace fgm
