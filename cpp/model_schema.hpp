// model.json's schema, the twin of fastgradmix/deploy/model_schema.py: the same fields, limits, order
// of checks and words, so a damaged model folder is the same one line from either predictor
// (tests/test_model_fuzz.py compares them; tests/test_native.py compares the two tables).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "json.hpp"

namespace fgm {

constexpr int64_t kMaxBankValues = int64_t{1} << 28;  // rows x feature_dim: 1 GiB of float32 features
constexpr size_t kMaxFileName = 255;                  // bytes of UTF-8
constexpr size_t kMaxDeviceName = 32;

struct ModelMeta {
  std::vector<std::string> class_names;
  int image_size = 0;
  int channels = 0;
  std::vector<double> mean;
  std::vector<double> std;
  int topk = 0;
  double threshold = 0.0;
  double tpr = 0.0;
  std::string bank_file;
  int64_t bank_size = 0;
  int64_t feature_dim = 0;
  std::vector<std::pair<std::string, std::string>> programs;  // device -> file name, in file order
};

// Checks a parsed model.json (label: how messages name it) as model_schema.check_meta does; throws
// UserError with the first problem.
ModelMeta check_meta(const json::Value& meta, const std::string& label);

// One line per schema field, "table key kind low high choices item-kind item-low item-high" ("-" for
// none), for tests/test_native.py to compare with the Python tables.
std::string describe_schema();

}  // namespace fgm
