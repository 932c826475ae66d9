#include "model_folder.hpp"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>

#include <ATen/ops/from_blob.h>

#include "json.hpp"

namespace fgm {
namespace {

static_assert(std::endian::native == std::endian::little, "bank.bin holds little-endian arrays");

constexpr const char* kFormatName = "fastgradmix-model";
constexpr int kFormatVersion = 1;
constexpr const char* kMetaFile = "model.json";
constexpr char kBankMagic[8] = {'F', 'G', 'M', 'B', 'A', 'N', 'K', '1'};
constexpr size_t kBankHeaderSize = 24;  // magic, rows, dim, classes, reserved (u32 each)

std::string read_file(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw UserError("cannot read " + path.string());
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

// Field `key` of `object`, of the wanted kind, or a UserError naming the file and the field.
const json::Value& field(const json::Value& object, const char* key, json::Value::Kind kind,
                         const std::filesystem::path& where) {
  const json::Value* value = object.find(key);
  if (value == nullptr || value->kind != kind)
    throw UserError(where.string() + " is corrupt: field '" + key + "' is missing or of the wrong type; export "
                    "the model again");
  return *value;
}

int integer_field(const json::Value& object, const char* key, const std::filesystem::path& where) {
  const json::Value& value = field(object, key, json::Value::Kind::Number, where);
  if (!value.is_integer())
    throw UserError(where.string() + " is corrupt: field '" + key + "' must be an integer");
  return static_cast<int>(value.number);
}

std::vector<float> float_list(const json::Value& object, const char* key, const std::filesystem::path& where) {
  std::vector<float> values;
  for (const auto& item : field(object, key, json::Value::Kind::Array, where).array) {
    if (item.kind != json::Value::Kind::Number)
      throw UserError(where.string() + " is corrupt: '" + key + "' must hold numbers");
    values.push_back(static_cast<float>(item.number));
  }
  return values;
}

uint32_t read_u32(const std::string& data, size_t offset) {
  uint32_t value;
  std::memcpy(&value, data.data() + offset, sizeof value);
  return value;
}

}  // namespace

std::filesystem::path ModelFolder::program_path(const std::string& device) const {
  auto found = programs.find(device);
  if (found == programs.end())
    throw UserError("model folder " + directory.string() + " has no " + device + " program; export it with "
                    "--devices " + device);
  std::filesystem::path path = directory / found->second;
  if (!std::filesystem::is_regular_file(path))
    throw UserError("model folder " + directory.string() + " is incomplete: " + found->second +
                    " is missing; export it again");
  return path;
}

ModelFolder read_model_folder(const std::filesystem::path& directory) {
  if (!std::filesystem::is_directory(directory))
    throw UserError("model folder " + directory.string() + " does not exist; create one with python -m "
                    "fastgradmix.export");
  std::filesystem::path meta_path = directory / kMetaFile;
  if (!std::filesystem::is_regular_file(meta_path))
    throw UserError(directory.string() + " is not a model folder: " + kMetaFile + " is missing; create one with "
                    "python -m fastgradmix.export");
  json::Value meta;
  try {
    meta = json::parse(read_file(meta_path));
  } catch (const std::runtime_error& error) {
    throw UserError(meta_path.string() + " is corrupt (" + error.what() + "); export the model again");
  }
  const json::Value* format = meta.find("format");
  if (format == nullptr || format->kind != json::Value::Kind::String || format->string != kFormatName)
    throw UserError(meta_path.string() + " is not a " + kFormatName + " file; create one with python -m "
                    "fastgradmix.export");
  const json::Value* version = meta.find("format_version");
  if (version == nullptr || !version->is_integer() || version->number != kFormatVersion)
    throw UserError(meta_path.string() + " has another format version; fgm-predict reads version " +
                    std::to_string(kFormatVersion) + ": export the model again");

  ModelFolder model;
  model.directory = directory;
  for (const auto& name : field(meta, "class_names", json::Value::Kind::Array, meta_path).array) {
    if (name.kind != json::Value::Kind::String)
      throw UserError(meta_path.string() + " is corrupt: class_names must be a non-empty list of strings");
    model.class_names.push_back(name.string);
  }
  if (model.class_names.empty())
    throw UserError(meta_path.string() + " is corrupt: class_names must be a non-empty list of strings");

  const auto& prep = field(meta, "preprocessing", json::Value::Kind::Object, meta_path);
  model.preprocessing.image_size = integer_field(prep, "image_size", meta_path);
  model.preprocessing.channels = integer_field(prep, "channels", meta_path);
  model.preprocessing.mean = float_list(prep, "mean", meta_path);
  model.preprocessing.std = float_list(prep, "std", meta_path);
  const Preprocessing& p = model.preprocessing;
  bool std_positive = true;
  for (float s : p.std) std_positive = std_positive && s > 0;
  if (p.image_size < 1 || (p.channels != 1 && p.channels != 3) || static_cast<int>(p.mean.size()) != p.channels ||
      static_cast<int>(p.std.size()) != p.channels || !std_positive)
    throw UserError(meta_path.string() + " is corrupt: preprocessing needs image_size >= 1, channels 1 or 3, and "
                    "one mean and one positive std per channel");

  const auto& scoring = field(meta, "scoring", json::Value::Kind::Object, meta_path);
  model.topk = integer_field(scoring, "topk", meta_path);
  model.threshold = field(scoring, "threshold", json::Value::Kind::Number, meta_path).number;
  if (model.topk < 1 || !std::isfinite(model.threshold))
    throw UserError(meta_path.string() + " is corrupt: scoring needs topk >= 1 and a finite threshold");

  for (const auto& [device, file] : field(meta, "programs", json::Value::Kind::Object, meta_path).object) {
    if (file.kind != json::Value::Kind::String)
      throw UserError(meta_path.string() + " is corrupt: programs must map device names to file names");
    model.programs[device] = file.string;
  }

  // the bank: header, then N x D float32, then N int32, all little-endian
  const auto& bank = field(meta, "bank", json::Value::Kind::Object, meta_path);
  std::filesystem::path bank_path = directory / field(bank, "file", json::Value::Kind::String, meta_path).string;
  if (!std::filesystem::is_regular_file(bank_path))
    throw UserError("model folder " + directory.string() + " is incomplete: " + bank_path.filename().string() +
                    " is missing; export it again");
  std::string data = read_file(bank_path);
  if (data.size() < kBankHeaderSize)
    throw UserError(bank_path.string() + " is corrupt: shorter than its header");
  if (std::memcmp(data.data(), kBankMagic, sizeof kBankMagic) != 0)
    throw UserError(bank_path.string() + " is not a fastgradmix bank file (bad magic bytes); export the model "
                    "again");
  uint64_t rows = read_u32(data, 8), dim = read_u32(data, 12), classes = read_u32(data, 16);
  uint64_t expected = kBankHeaderSize + 4 * rows * dim + 4 * rows;
  if (data.size() != expected)
    throw UserError(bank_path.string() + " is corrupt: " + std::to_string(data.size()) + " bytes, expected " +
                    std::to_string(expected) + "; export the model again");
  if (classes != model.class_names.size() || static_cast<int64_t>(rows) != integer_field(bank, "size", meta_path) ||
      static_cast<int64_t>(dim) != integer_field(bank, "feature_dim", meta_path))
    throw UserError(bank_path.string() + " does not match model.json (classes, size or feature_dim differ); export "
                    "the model again");
  if (rows == 0) throw UserError(bank_path.string() + " holds no features; export the model again");
  auto n = static_cast<int64_t>(rows), d = static_cast<int64_t>(dim);
  model.bank_features = at::from_blob(data.data() + kBankHeaderSize, {n, d}, at::kFloat).clone();
  model.bank_labels = at::from_blob(data.data() + kBankHeaderSize + 4 * rows * dim, {n}, at::kInt).to(at::kLong);
  int64_t lowest = model.bank_labels.min().item<int64_t>(), highest = model.bank_labels.max().item<int64_t>();
  if (lowest < 0 || highest >= static_cast<int64_t>(classes))
    throw UserError(bank_path.string() + " is corrupt: labels outside [0, " + std::to_string(classes) +
                    "); export the model again");
  return model;
}

}  // namespace fgm
