// A model folder written by `python -m fastgradmix.export` (format: docs/model_format.md), read and
// cross-checked the way fastgradmix/deploy/model_folder.py reads it: the same checks in the same order,
// the same one-line messages.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "errors.hpp"

namespace fgm {

struct Preprocessing {
  int image_size = 0;       // side S of the square model input
  int channels = 0;         // 1 or 3
  std::vector<float> mean;  // per channel, [0, 1] units
  std::vector<float> std;
};

struct ModelFolder {
  std::string directory;  // as pathlib prints it (printable.hpp's pathlib_string)
  std::vector<std::string> class_names;
  Preprocessing preprocessing;
  int topk = 0;
  double threshold = 0.0;    // known when score >= threshold
  at::Tensor bank_features;  // (N, D) float32, L2-normalised
  at::Tensor bank_labels;    // (N,) int64 in [0, K)
  std::map<std::string, std::string> programs;  // device type -> .pt2 file name

  // The AOTInductor package for `device` ("cpu"), checked to exist inside the folder; throws UserError.
  std::string program_path(const std::string& device) const;
};

ModelFolder read_model_folder(const std::string& directory);

}  // namespace fgm
