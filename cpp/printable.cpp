#include "printable.hpp"

#include <cstdio>
#include <vector>

#include "json.hpp"

namespace fgm {
namespace {

void append_hex(std::string& out, const char* format, unsigned code) {
  char buffer[12];
  std::snprintf(buffer, sizeof buffer, format, code);
  out += buffer;
}

}  // namespace

std::string printable(std::string_view path) {
  std::string out;
  out.reserve(path.size());
  for (size_t i = 0; i < path.size();) {
    unsigned char c = static_cast<unsigned char>(path[i]);
    if (c < 0x80) {
      if (c == '\\') out += "\\\\";
      else if (c == '\t') out += "\\t";
      else if (c == '\n') out += "\\n";
      else if (c == '\r') out += "\\r";
      else if (c < 0x20 || c == 0x7F) append_hex(out, "\\x%02x", c);
      else out += static_cast<char>(c);
      ++i;
      continue;
    }
    unsigned code = 0;
    size_t length = json::decode_utf8(path, i, code);
    if (length == 0) {
      append_hex(out, "\\u%04x", 0xDC00 + c);
      ++i;
    } else {
      if (code <= 0x9F) append_hex(out, "\\x%02x", code);  // C1 controls
      else out.append(path.substr(i, length));
      i += length;
    }
  }
  return out;
}

std::string pathlib_string(std::string_view path) {
  if (path.empty()) return ".";
  std::string root;
  if (path[0] == '/') root = path.size() >= 2 && path[1] == '/' && (path.size() == 2 || path[2] != '/') ? "//" : "/";
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view part = path.substr(start, end - start);
    if (!part.empty() && part != ".") parts.push_back(part);
    start = end + 1;
  }
  std::string out = root;
  for (size_t k = 0; k < parts.size(); ++k) {
    if (k) out += '/';
    out.append(parts[k]);
  }
  return out.empty() ? "." : out;
}

std::string join_path(const std::string& folder, const std::string& name) {
  if (folder == ".") return name;
  if (!folder.empty() && folder.back() == '/') return folder + name;
  return folder + "/" + name;
}

}  // namespace fgm
