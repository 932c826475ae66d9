// fgm-predict: the native twin of `python -m fastgradmix.predict`.
//
//   fgm-predict --model MODEL_DIR [--json] [--batch-size N] [--threads N] IMAGES_OR_FOLDERS...
//
// One line per image on stdout (PATH<TAB>CLASS or unknown<TAB>score=S<TAB>threshold=T, or --json),
// one line per problem on stderr. Exit code 0: every image scored; 1: some could not be; 2: none could,
// or the model folder or the options are bad.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <ATen/Parallel.h>

#include "image_decode.hpp"
#include "model_folder.hpp"
#include "predictor.hpp"
#include "printable.hpp"

namespace fs = std::filesystem;

namespace {

constexpr const char* kProg = "fgm-predict";
constexpr const char* kNonFinite =
    "the model gave a non-finite score (NaN or infinite features); check the model folder";  // predictor.NON_FINITE

struct Options {
  std::string model;
  bool json = false;
  int batch_size = 64;
  int threads = 0;
  std::vector<std::string> inputs;
};

const char* kUsage =
    "usage: fgm-predict --model MODEL_DIR [--json] [--batch-size N] [--threads N] IMAGES...\n"
    "Classify JPEG/PNG images (files, or folders searched recursively) with a model folder written by\n"
    "python -m fastgradmix.export: one line per image, PATH<TAB>CLASS or unknown<TAB>score=S<TAB>threshold=T.\n"
    "  --model DIR       the model folder\n"
    "  --json            one JSON object per line\n"
    "  --batch-size N    images per forward pass (default 64)\n"
    "  --threads N       CPU threads (0 = libtorch's default)\n";

int parse_positive(const std::string& flag, const std::string& text, int minimum) {
  char* end = nullptr;
  long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || value < minimum || value > 1 << 20)
    throw fgm::UserError(flag + " must be an integer >= " + std::to_string(minimum) + " (got '" + text + "')");
  return static_cast<int>(value);
}

std::optional<Options> parse_args(int argc, char** argv) {
  Options options;
  bool only_inputs = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const std::string& flag) -> std::string {
      if (i + 1 >= argc) throw fgm::UserError(flag + " needs a value (see --help)");
      return argv[++i];
    };
    if (only_inputs || arg.empty() || arg[0] != '-' || arg == "-") {
      options.inputs.push_back(arg);
    } else if (arg == "--") {
      only_inputs = true;
    } else if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      return std::nullopt;
    } else if (arg == "--model") {
      options.model = value(arg);
    } else if (arg.rfind("--model=", 0) == 0) {
      options.model = arg.substr(8);
    } else if (arg == "--json") {
      options.json = true;
    } else if (arg == "--batch-size") {
      options.batch_size = parse_positive(arg, value(arg), 1);
    } else if (arg == "--threads") {
      options.threads = parse_positive(arg, value(arg), 0);
    } else {
      throw fgm::UserError("unknown option " + arg + " (see --help)");
    }
  }
  if (options.model.empty()) throw fgm::UserError("the following arguments are required: --model (see --help)");
  if (options.inputs.empty()) throw fgm::UserError("the following arguments are required: images (see --help)");
  return options;
}

bool has_image_suffix(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* suffix : {".jpg", ".jpeg", ".png"}) {
    std::string s = suffix;
    if (lower.size() >= s.size() && lower.compare(lower.size() - s.size(), s.size(), s) == 0) return true;
  }
  return false;
}

// Image files under `folder`, recursively, entries in byte order of their names; symlinks to folders
// are not followed (a link to .. would repeat the tree), symlinks to files are read, names that resolve
// to nothing regular (dangling or looping links, fifos) are left out: deploy/image_inputs.py's rules.
void images_under(const fs::path& folder, std::vector<std::string>& found) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(folder)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    fs::path path = folder / name;
    std::error_code error;
    bool is_link = fs::is_symlink(fs::symlink_status(path, error));
    if (fs::is_directory(path, error) && !is_link) images_under(path, found);
    else if (has_image_suffix(name) && fs::is_regular_file(path, error)) found.push_back(path.string());
  }
}

// (path, problem) pairs in command-line order; an empty problem means an image to read.
std::vector<std::pair<std::string, std::string>> list_images(const std::vector<std::string>& inputs) {
  std::vector<std::pair<std::string, std::string>> found;
  for (const auto& item : inputs) {
    std::error_code error;
    if (fs::is_directory(item, error)) {
      std::vector<std::string> images;
      try {
        images_under(item, images);
      } catch (const fs::filesystem_error& failure) {
        found.emplace_back(item, "cannot list folder (" + failure.code().message() + ")");
        continue;
      }
      if (images.empty()) found.emplace_back(item, "folder holds no .jpg, .jpeg or .png images");
      for (auto& path : images) found.emplace_back(std::move(path), "");
    } else if (fs::is_regular_file(item, error)) {
      found.emplace_back(item, "");
    } else {
      found.emplace_back(item, "no such file or folder");
    }
  }
  return found;
}

int run(const Options& options) {
  int scored = 0, problems = 0;
  if (options.threads > 0) at::set_num_threads(options.threads);
  fgm::Predictor predictor(fgm::read_model_folder(options.model));
  auto problem_line = [&](const std::string& path, const std::string& why) {
    std::cerr << kProg << ": error: " << fgm::printable(path) << ": " << why << std::endl;
    ++problems;
  };

  std::vector<std::string> pending_paths;
  std::vector<at::Tensor> pending_inputs;  // each (1, C, S, S)
  auto flush = [&] {
    if (pending_paths.empty()) return;
    for (const auto& prediction : predictor.predict(pending_paths, pending_inputs)) {
      if (!std::isfinite(prediction.score)) {
        problem_line(prediction.path, kNonFinite);
        continue;
      }
      std::cout << (options.json ? fgm::format_json(prediction) : fgm::format_text(prediction)) << '\n';
      ++scored;
    }
    std::cout.flush();
    pending_paths.clear();
    pending_inputs.clear();
  };
  for (const auto& [path, listing_problem] : list_images(options.inputs)) {
    std::string problem = listing_problem;
    if (problem.empty()) {
      try {
        pending_inputs.push_back(predictor.prepare(path));
        pending_paths.push_back(path);
      } catch (const fgm::ImageError& error) {  // this image's problem (out of memory too); the rest go on
        problem = error.what();
      }
    }
    if (!problem.empty()) problem_line(path, problem);
    if (static_cast<int>(pending_paths.size()) == options.batch_size) flush();
  }
  flush();
  if (scored == 0)
    throw fgm::UserError("no image could be scored (" + std::to_string(problems) + " problem" +
                         (problems == 1 ? "" : "s") + " above)");
  return problems ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::optional<Options> options = parse_args(argc, argv);
    if (!options) return 0;
    return run(*options);
  } catch (const fgm::UserError& error) {
    std::cerr << kProg << ": error: " << error.what() << std::endl;
    return 2;
  } catch (const std::exception& error) {  // libtorch failures: report them in one line too
    std::string what = error.what();
    std::cerr << kProg << ": error: " << what.substr(0, what.find('\n')) << std::endl;
    return 2;
  }
}
