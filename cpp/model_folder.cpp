#include "model_folder.hpp"

#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include <ATen/ops/from_blob.h>

#include "json.hpp"
#include "model_schema.hpp"
#include "printable.hpp"

namespace fgm {
namespace {

namespace fs = std::filesystem;

static_assert(std::endian::native == std::endian::little, "bank.bin holds little-endian arrays");

constexpr const char* kMetaFile = "model.json";
constexpr char kBankMagic[8] = {'F', 'G', 'M', 'B', 'A', 'N', 'K', '1'};
constexpr size_t kBankHeaderSize = 24;  // magic, rows, dim, classes, reserved (u32 each)
constexpr double kNormTolerance = 1e-3;  // model_folder.NORM_TOLERANCE

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

bool is_file(const std::string& path) {
  std::error_code error;
  return fs::is_regular_file(path, error);
}

// os.path.realpath(folder/name) lies directly in os.path.realpath(folder) (the file exists)
bool inside_folder(const std::string& folder, const std::string& name) {
  std::error_code error;
  fs::path resolved_folder = fs::canonical(folder, error);
  if (error) return false;
  fs::path resolved_file = fs::canonical(join_path(folder, name), error);
  return !error && resolved_file.parent_path() == resolved_folder;
}

std::string read_meta(const std::string& path, const std::string& label) {
  File file(std::fopen(path.c_str(), "rb"));
  if (!file) throw UserError(label + ": cannot read (" + std::strerror(errno) + ")");
  std::string data(json::kMaxBytes + 1, '\0');  // at most one byte past the limit, as schema.read_json_file
  size_t length = std::fread(data.data(), 1, data.size(), file.get());
  if (std::ferror(file.get())) throw UserError(label + ": cannot read (" + std::strerror(errno) + ")");
  data.resize(length);
  return data;
}

uint32_t u32(const unsigned char* bytes) {
  uint32_t value;
  std::memcpy(&value, bytes, sizeof value);
  return value;
}

struct Bank {
  at::Tensor features;  // (N, D) float32
  at::Tensor labels;    // (N,) int64
};

// model_folder.read_bank with expect = (N, D, K) from model.json: the header first, the arrays only
// when the header and the file length agree with model.json
Bank read_bank(const std::string& path, const std::string& folder, const std::string& name, int64_t rows_expected,
               int64_t dim_expected, int64_t classes_expected) {
  std::string shown = printable(path);
  if (!is_file(path))
    throw UserError("model folder " + printable(folder) + " is incomplete: " + printable(name) +
                    " is missing; export it again");
  File file(std::fopen(path.c_str(), "rb"));
  if (!file) throw UserError(shown + ": cannot read (" + std::strerror(errno) + ")");
  std::error_code error;
  uintmax_t length = fs::file_size(path, error);
  if (error) throw UserError(shown + ": cannot read (" + error.message() + ")");
  unsigned char header[kBankHeaderSize];
  if (std::fread(header, 1, kBankHeaderSize, file.get()) < kBankHeaderSize)
    throw UserError(shown + " is corrupt: " + std::to_string(length) + " bytes, shorter than its " +
                    std::to_string(kBankHeaderSize) + "-byte header");
  if (std::memcmp(header, kBankMagic, sizeof kBankMagic) != 0)
    throw UserError(shown + " is not a fastgradmix bank file (bad magic bytes); export the model again");
  uint64_t rows = u32(header + 8), dim = u32(header + 12), classes = u32(header + 16);
  if (static_cast<int64_t>(rows) != rows_expected || static_cast<int64_t>(dim) != dim_expected ||
      static_cast<int64_t>(classes) != classes_expected)
    throw UserError(shown + " does not match " + kMetaFile + " (classes, size or feature_dim differ); export the "
                    "model again");
  uint64_t expected = kBankHeaderSize + 4 * rows * dim + 4 * rows;
  if (length != expected)
    throw UserError(shown + " is corrupt: " + std::to_string(length) + " bytes, expected " + std::to_string(expected) +
                    " for " + std::to_string(rows) + " x " + std::to_string(dim) +
                    " features and labels; export the model again");
  auto n = static_cast<int64_t>(rows), d = static_cast<int64_t>(dim);
  std::vector<float> features(rows * dim);
  std::vector<int32_t> labels(rows);
  if (std::fread(features.data(), 4, features.size(), file.get()) != features.size() ||
      std::fread(labels.data(), 4, labels.size(), file.get()) != labels.size())
    throw UserError(shown + " changed while it was read; export the model again");
  for (int32_t label : labels)
    if (label < 0 || static_cast<uint64_t>(label) >= classes)
      throw UserError(shown + " is corrupt: labels outside [0, " + std::to_string(classes) +
                      "); export the model again");
  for (int64_t row = 0; row < n; ++row) {
    double squares = 0.0;
    bool finite = true;
    for (int64_t k = 0; k < d; ++k) {
      double value = features[row * d + k];
      finite = finite && std::isfinite(value);
      squares += value * value;
    }
    if (!finite || !(std::abs(std::sqrt(squares) - 1.0) <= kNormTolerance))
      throw UserError(shown + " is corrupt: feature row " + std::to_string(row) +
                      " is not finite or not L2-normalised; export the model again");
  }
  Bank bank;
  bank.features = at::from_blob(features.data(), {n, d}, at::kFloat).clone();
  bank.labels = at::from_blob(labels.data(), {n}, at::kInt).to(at::kLong);
  return bank;
}

}  // namespace

std::string ModelFolder::program_path(const std::string& device) const {
  auto found = programs.find(device);
  if (found == programs.end()) {
    std::string have;
    for (const auto& [name, file] : programs) {
      if (!have.empty()) have += ", ";
      have += name;
    }
    throw UserError("model folder " + printable(directory) + " has no " + device + " program (it has: " +
                    (have.empty() ? "none" : have) + "); export it with --devices " + device +
                    " on a machine that has one");
  }
  std::string path = join_path(directory, found->second);
  if (!is_file(path))
    throw UserError("model folder " + printable(directory) + " is incomplete: " + printable(found->second) +
                    " is missing; export it again");
  if (!inside_folder(directory, found->second))
    throw UserError(printable(path) + " is a link to a file outside the model folder; export the model again");
  return path;
}

ModelFolder read_model_folder(const std::string& given) {
  std::string directory = pathlib_string(given);
  std::error_code error;
  if (!fs::is_directory(directory, error))
    throw UserError("model folder " + printable(directory) + " does not exist; create one with python -m "
                    "fastgradmix.export");
  std::string meta_path = join_path(directory, kMetaFile);
  if (!is_file(meta_path))
    throw UserError(printable(directory) + " is not a model folder: " + kMetaFile + " is missing; create one with "
                    "python -m fastgradmix.export");
  std::string label = printable(meta_path);
  json::Value meta;
  try {
    meta = json::parse_strict(read_meta(meta_path, label), label);
  } catch (const json::JsonError& refusal) {
    throw UserError(refusal.what());
  }
  ModelMeta fields = check_meta(meta, label);

  ModelFolder model;
  model.directory = directory;
  model.class_names = fields.class_names;
  model.preprocessing.image_size = fields.image_size;
  model.preprocessing.channels = fields.channels;
  model.preprocessing.mean.assign(fields.mean.begin(), fields.mean.end());
  model.preprocessing.std.assign(fields.std.begin(), fields.std.end());
  model.topk = fields.topk;
  model.threshold = fields.threshold;
  for (const auto& [device, file] : fields.programs) model.programs[device] = file;

  std::string bank_path = join_path(directory, fields.bank_file);
  if (is_file(bank_path) && !inside_folder(directory, fields.bank_file))
    throw UserError(printable(bank_path) + " is a link to a file outside the model folder; export the model again");
  Bank bank = read_bank(bank_path, directory, fields.bank_file, fields.bank_size, fields.feature_dim,
                        static_cast<int64_t>(fields.class_names.size()));
  model.bank_features = bank.features;
  model.bank_labels = bank.labels;
  return model;
}

}  // namespace fgm
