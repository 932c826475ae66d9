#include "model_schema.hpp"

#include <cmath>
#include <optional>

#include "errors.hpp"

namespace fgm {
namespace {

// A bound as a number and as Python's str() of it (the messages print the text)
struct Bound {
  double value;
  const char* text;
};

struct Field {
  const char* key;
  const char* kind;  // bool, int, float, str, list, dict
  std::optional<Bound> low{};
  std::optional<Bound> high{};
  std::vector<int64_t> choices{};
  const Field* item = nullptr;  // lists: every element
};

const Field kClassName{"", "str", Bound{1, "1"}, Bound{256, "256"}};
const Field kMeanValue{"", "float", Bound{0, "0"}, Bound{1, "1"}};
const Field kStdValue{"", "float", Bound{1e-6, "1e-06"}, Bound{1e6, "1000000.0"}};
const Field kProgramFile{"", "str", Bound{1, "1"}, Bound{255, "255"}};

const std::vector<Field> kTop = {
    {"format_version", "int", Bound{1, "1"}, Bound{1, "1"}},
    {"class_names", "list", Bound{1, "1"}, Bound{100000, "100000"}, {}, &kClassName},
    {"preprocessing", "dict"},
    {"scoring", "dict"},
    {"bank", "dict"},
    {"programs", "dict"},
};
const std::vector<Field> kPreprocessing = {
    {"image_size", "int", Bound{1, "1"}, Bound{1024, "1024"}},
    {"channels", "int", std::nullopt, std::nullopt, {1, 3}},
    {"mean", "list", Bound{1, "1"}, Bound{3, "3"}, {}, &kMeanValue},
    {"std", "list", Bound{1, "1"}, Bound{3, "3"}, {}, &kStdValue},
};
const std::vector<Field> kScoring = {
    {"topk", "int", Bound{1, "1"}, Bound{2147483647, "2147483647"}},
    {"threshold", "float"},
    {"tpr", "float", Bound{0, "0"}, Bound{1, "1"}},
};
const std::vector<Field> kBank = {
    {"file", "str", Bound{1, "1"}, Bound{255, "255"}},
    {"size", "int", Bound{1, "1"}, Bound{16777216, "16777216"}},
    {"feature_dim", "int", Bound{1, "1"}, Bound{65536, "65536"}},
};

bool is_kind(const json::Value& value, const std::string& kind) {
  if (kind == "bool") return value.is_boolean();
  if (kind == "int") return value.is_number_integer();
  if (kind == "float") return value.is_number();
  if (kind == "str") return value.is_string();
  if (kind == "list") return value.is_array();
  return value.is_object();
}

// schema._check_value, message for message
void check_value(const json::Value& value, const Field& field, const std::string& where) {
  std::string kind = field.kind;
  if (value.is_null()) throw UserError(where + ": must be " + kind + ", got null");
  if (!is_kind(value, kind))
    throw UserError(where + ": must be " + kind + ", got " + json::type_name(value) + " " + json::short_value(value));
  if (kind == "float" && !std::isfinite(value.get<double>()))
    throw UserError(where + ": must be a finite number, got " + json::python_float(value.get<double>()));
  if (!field.choices.empty()) {
    bool found = false;
    for (int64_t choice : field.choices) found = found || value.get<int64_t>() == choice;
    if (!found) {
      std::string listed;
      for (int64_t choice : field.choices) {
        if (!listed.empty()) listed += ", ";
        listed += std::to_string(choice);
      }
      throw UserError(where + ": must be one of " + listed + ", got " + json::short_value(value));
    }
  }
  bool sized = kind == "str" || kind == "list";
  if (sized || kind == "int" || kind == "float") {
    double size = kind == "str"    ? static_cast<double>(json::code_points(value.get_ref<const std::string&>()))
                  : kind == "list" ? static_cast<double>(value.size())
                                   : value.get<double>();
    std::string what = sized ? "length" : "value";
    if (field.low && size < field.low->value)
      throw UserError(where + ": " + what + " must be >= " + field.low->text + ", got " + json::short_value(value));
    if (field.high && size > field.high->value)
      throw UserError(where + ": " + what + " must be <= " + field.high->text + ", got " + json::short_value(value));
  }
  if (kind == "list" && field.item != nullptr)
    for (size_t index = 0; index < value.size(); ++index)
      check_value(value[index], *field.item, where + "[" + std::to_string(index) + "]");
}

// schema.check: every field in table order; keys the table does not name are left alone
void check(const json::Value& document, const std::vector<Field>& schema, const std::string& label) {
  for (const Field& field : schema) {
    if (!document.contains(field.key)) throw UserError(label + ": missing key '" + field.key + "'");
    check_value(document.at(field.key), field, label + ": " + field.key);
  }
}

bool has_control_character(const std::string& text) {
  for (size_t i = 0; i < text.size();) {
    unsigned code = static_cast<unsigned char>(text[i]);
    size_t length = code < 0x80 ? 1 : json::decode_utf8(text, i, code);
    if (code < 0x20 || (code >= 0x7F && code <= 0x9F)) return true;
    i += length ? length : 1;
  }
  return false;
}

void check_file_name(const std::string& name, const std::string& where) {
  if (name == "." || name == ".." || name.find('/') != std::string::npos || name.find('\0') != std::string::npos ||
      name.size() > kMaxFileName)
    throw UserError(where + ": must be a file name inside the model folder, got " + json::short_value(name));
}

bool is_device_name(const std::string& name) {
  if (name.empty() || name.size() > kMaxDeviceName) return false;
  for (unsigned char c : name)
    if (!(std::isalnum(c) && c < 0x80) && c != '_') return false;
  return true;
}

std::string describe(const char* table, const Field& field) {
  auto bound = [](const std::optional<Bound>& b) { return b ? std::string(b->text) : std::string("-"); };
  std::string choices;
  for (int64_t choice : field.choices) {
    if (!choices.empty()) choices += ',';
    choices += std::to_string(choice);
  }
  std::string line = std::string(table) + " " + field.key + " " + field.kind + " " + bound(field.low) + " " +
                     bound(field.high) + " " + (choices.empty() ? "-" : choices);
  if (field.item != nullptr)
    line += std::string(" ") + field.item->kind + " " + bound(field.item->low) + " " + bound(field.item->high);
  else
    line += " - - -";
  return line + "\n";
}

}  // namespace

ModelMeta check_meta(const json::Value& meta, const std::string& label) {
  const std::string format_name = "fastgradmix-model";
  if (!meta.is_object() || !meta.contains("format") || !meta.at("format").is_string() ||
      meta.at("format").get_ref<const std::string&>() != format_name)
    throw UserError(label + " is not a " + format_name + " file; create one with python -m fastgradmix.export");
  if (meta.contains("format_version") && meta.at("format_version").is_number_integer() &&
      meta.at("format_version").get<int64_t>() != 1)
    throw UserError(label + " has format version " + std::to_string(meta.at("format_version").get<int64_t>()) +
                    "; the predictors read version 1: export the model again");
  check(meta, kTop, label);
  ModelMeta fields;
  const json::Value& names = meta.at("class_names");
  for (size_t index = 0; index < names.size(); ++index) {
    const std::string& name = names[index].get_ref<const std::string&>();
    if (has_control_character(name))
      throw UserError(label + ": class_names[" + std::to_string(index) + "]: must not hold control characters, got " +
                      json::short_value(names[index]));
    fields.class_names.push_back(name);
  }

  const json::Value& prep = meta.at("preprocessing");
  check(prep, kPreprocessing, label + ": preprocessing");
  fields.image_size = static_cast<int>(prep.at("image_size").get<int64_t>());
  fields.channels = static_cast<int>(prep.at("channels").get<int64_t>());
  for (const auto& value : prep.at("mean")) fields.mean.push_back(value.get<double>());
  for (const auto& value : prep.at("std")) fields.std.push_back(value.get<double>());
  if (static_cast<int>(fields.mean.size()) != fields.channels || static_cast<int>(fields.std.size()) != fields.channels)
    throw UserError(label + ": preprocessing: mean and std must hold one value per channel (" +
                    std::to_string(fields.channels) + "), got " + std::to_string(fields.mean.size()) + " and " +
                    std::to_string(fields.std.size()));

  const json::Value& scoring = meta.at("scoring");
  check(scoring, kScoring, label + ": scoring");
  fields.topk = static_cast<int>(scoring.at("topk").get<int64_t>());
  fields.threshold = scoring.at("threshold").get<double>();
  fields.tpr = scoring.at("tpr").get<double>();

  const json::Value& bank = meta.at("bank");
  check(bank, kBank, label + ": bank");
  fields.bank_file = bank.at("file").get<std::string>();
  fields.bank_size = bank.at("size").get<int64_t>();
  fields.feature_dim = bank.at("feature_dim").get<int64_t>();
  if (fields.bank_size * fields.feature_dim > kMaxBankValues)
    throw UserError(label + ": bank: size x feature_dim must be <= " + std::to_string(kMaxBankValues) + ", got " +
                    std::to_string(fields.bank_size) + " x " + std::to_string(fields.feature_dim));
  check_file_name(fields.bank_file, label + ": bank: file");

  const json::Value& programs = meta.at("programs");
  for (const auto& [device, file] : programs.items())
    if (!is_device_name(device))
      throw UserError(label + ": programs: keys must be device names (ASCII letters, digits, _), got " +
                      json::short_value(device));
  for (const auto& [device, file] : programs.items()) check_value(file, kProgramFile, label + ": programs: " + device);
  for (const auto& [device, file] : programs.items()) {
    check_file_name(file.get<std::string>(), label + ": programs: " + device);
    fields.programs.emplace_back(device, file.get<std::string>());
  }
  return fields;
}

std::string describe_schema() {
  std::string out;
  for (const Field& field : kTop) out += describe("top", field);
  for (const Field& field : kPreprocessing) out += describe("preprocessing", field);
  for (const Field& field : kScoring) out += describe("scoring", field);
  for (const Field& field : kBank) out += describe("bank", field);
  out += describe("programs", Field{"*", kProgramFile.kind, kProgramFile.low, kProgramFile.high});
  return out;
}

}  // namespace fgm
