#include "json.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_set>
#include <vector>

namespace fgm::json {
namespace {

// schema._depth: the deepest [ / { nesting counted outside strings, over the whole text, before parsing
int nesting_depth(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

// nlohmann's messages start with "[json.exception.parse_error.101] "; the rest, on one line, in ASCII
std::string one_line(std::string text) {
  if (!text.empty() && text[0] == '[') {
    auto end = text.find("] ");
    if (end != std::string::npos) text.erase(0, end + 2);
  }
  std::string out;
  for (unsigned char c : text) {
    if (c < 0x20 || c >= 0x7F) {  // controls, and bytes of a UTF-8 sequence that nlohmann may have cut
      char buffer[8];
      std::snprintf(buffer, sizeof buffer, "\\x%02x", c);
      out += buffer;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// Builds the document from nlohmann's SAX events (as its own DOM builder does) and refuses what
// schema.py refuses beyond RFC 8259: duplicate keys, integers outside int64 (Python keeps them exact,
// nlohmann would round them to doubles).
class StrictBuilder {
 public:
  using number_integer_t = Value::number_integer_t;
  using number_unsigned_t = Value::number_unsigned_t;
  using number_float_t = Value::number_float_t;
  using string_t = Value::string_t;
  using binary_t = Value::binary_t;

  Value root;
  std::string error;  // why parsing stopped, empty when it did not

  bool null() { return put(nullptr); }
  bool boolean(bool value) { return put(value); }
  bool number_integer(number_integer_t value) { return put(value); }
  bool number_unsigned(number_unsigned_t value) {
    if (value > static_cast<number_unsigned_t>(std::numeric_limits<int64_t>::max()))
      return refuse("integer out of 64-bit range");
    return put(static_cast<number_integer_t>(value));
  }
  bool number_float(number_float_t value, const string_t& token) {
    // an integer literal that overflowed int64 arrives here as a double
    if (token.find_first_of(".eE") == string_t::npos) return refuse("integer out of 64-bit range");
    return put(value);
  }
  bool string(string_t& value) { return put(value); }
  bool binary(binary_t&) { return refuse("binary values are not JSON"); }
  bool start_object(std::size_t) {
    Value* object = slot(Value::object());
    stack_.push_back(object);
    keys_.emplace_back();
    return true;
  }
  bool key(string_t& name) {
    if (!keys_.back().insert(name).second) return refuse("duplicate key " + python_repr_ascii(name));
    member_ = &(*stack_.back())[name];
    return true;
  }
  bool end_object() {
    stack_.pop_back();
    keys_.pop_back();
    return true;
  }
  bool start_array(std::size_t) {
    stack_.push_back(slot(Value::array()));
    return true;
  }
  bool end_array() {
    stack_.pop_back();
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& failure) {
    // Python's words where they are about the value, not the syntax around it
    if (failure.id == 406) return refuse("number out of range");  // a literal that overflows a double
    std::string constant = constant_at(position);
    if (!constant.empty()) return refuse("non-standard number " + constant);
    std::string message = failure.what();
    if (message.find("invalid string: surrogate U+") != std::string::npos)  // a \ud800 escape alone
      return refuse("lone surrogate in a string");
    return refuse(one_line(message));
  }

  explicit StrictBuilder(std::string_view text) : text_(text) {}

 private:
  std::string_view text_;
  std::vector<Value*> stack_;
  std::vector<std::unordered_set<std::string>> keys_;
  Value* member_ = nullptr;  // the object member that the next value fills

  // NaN, Infinity or -Infinity where nlohmann stopped (it reads one character of them, two of -Infinity)
  std::string constant_at(size_t position) const {
    if (position == 0 || position > text_.size()) return "";
    size_t last = position - 1;
    for (const char* word : {"NaN", "Infinity"}) {
      if (text_.substr(last, std::strlen(word)) != word) continue;
      return last > 0 && text_[last - 1] == '-' && word[0] == 'I' ? std::string("-") + word : std::string(word);
    }
    return "";
  }

  bool refuse(const std::string& why) {
    if (error.empty()) error = why;
    return false;
  }
  template <typename T>
  bool put(T&& value) {
    slot(Value(std::forward<T>(value)));
    return true;
  }
  Value* slot(Value value) {
    if (stack_.empty()) {
      root = std::move(value);
      return &root;
    }
    if (stack_.back()->is_array()) {
      stack_.back()->push_back(std::move(value));
      return &stack_.back()->back();
    }
    *member_ = std::move(value);
    return member_;
  }
  // repr() of a key for the duplicate-key message; exact for printable ASCII, escaped otherwise
  static std::string python_repr_ascii(const std::string& text) {
    std::string out = "'";
    for (unsigned char c : text) {
      if (c == '\\' || c == '\'') out += '\\';
      if (c >= 0x20 && c < 0x7F) {
        out += static_cast<char>(c);
      } else {
        char buffer[8];
        std::snprintf(buffer, sizeof buffer, "\\x%02x", c);
        out += buffer;
      }
    }
    return out + "'";
  }
};

void append_escape(std::string& out, unsigned code) {
  char buffer[16];
  std::snprintf(buffer, sizeof buffer, "\\u%04x", code);
  out += buffer;
}

}  // namespace

size_t decode_utf8(std::string_view text, size_t i, unsigned& code) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  unsigned lead = byte(i);
  size_t length = lead >= 0xF0 && lead < 0xF5   ? 4
                  : lead >= 0xE0 && lead < 0xF0 ? 3
                  : lead >= 0xC2 && lead < 0xE0 ? 2
                                                : 0;
  if (length == 0 || i + length > text.size()) return 0;
  code = lead & (0xFF >> (length + 1));
  for (size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    code = (code << 6) | (byte(i + k) & 0x3F);
  }
  // overlong forms, surrogates and values above U+10FFFF are invalid, as Python's decoder says
  static constexpr unsigned kMinimum[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (code < kMinimum[length] || code > 0x10FFFF || (code >= 0xD800 && code < 0xE000)) return 0;
  return length;
}

size_t first_invalid_utf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      ++i;
      continue;
    }
    unsigned code = 0;
    size_t length = decode_utf8(text, i, code);
    if (length == 0) return i;
    i += length;
  }
  return std::string_view::npos;
}

size_t code_points(std::string_view text) {
  size_t count = 0;
  for (unsigned char c : text) count += (c & 0xC0) != 0x80;
  return count;
}

Value parse_strict(std::string_view bytes, const std::string& label) {
  if (bytes.size() > kMaxBytes)
    throw JsonError(label + ": larger than " + std::to_string(kMaxBytes) + " bytes");
  size_t bad = first_invalid_utf8(bytes);
  if (bad != std::string_view::npos)
    throw JsonError(label + ": not valid UTF-8 (byte " + std::to_string(bad) + ")");
  if (nesting_depth(bytes) > kMaxDepth)
    throw JsonError(label + ": nested deeper than " + std::to_string(kMaxDepth) + " levels");
  // Python's json refuses a byte-order mark; nlohmann would skip it
  if (bytes.substr(0, 3) == "\xEF\xBB\xBF")
    throw JsonError(label + ": not valid JSON (Unexpected UTF-8 BOM (decode using utf-8-sig): line 1 column 1 (char 0))");
  StrictBuilder builder(bytes);
  bool parsed = Value::sax_parse(bytes.begin(), bytes.end(), &builder, nlohmann::json::input_format_t::json, /*strict=*/true);
  if (!parsed || !builder.error.empty())
    throw JsonError(label + ": not valid JSON (" + (builder.error.empty() ? "parse error" : builder.error) + ")");
  return std::move(builder.root);
}

std::string quote(std::string_view text) {
  std::string out = "\"";
  for (size_t i = 0; i < text.size();) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
          if (c < 0x20 || c == 0x7F) append_escape(out, c);  // outside " "..."~", as Python escapes
          else out += static_cast<char>(c);
      }
      ++i;
      continue;
    }
    unsigned code = 0;
    size_t length = decode_utf8(text, i, code);
    if (length == 0) {  // an undecodable byte: Python's surrogateescape maps it to U+DC80..U+DCFF
      append_escape(out, 0xDC00 + c);
      ++i;
    } else if (code >= 0x10000) {
      append_escape(out, 0xD800 + ((code - 0x10000) >> 10));
      append_escape(out, 0xDC00 + ((code - 0x10000) & 0x3FF));
      i += length;
    } else {
      append_escape(out, code);
      i += length;
    }
  }
  return out + "\"";
}

std::string python_float(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  char buffer[64];
  // shortest round-trip digits in scientific form, e.g. "-7.9021e+00", then laid out as repr() does
  auto result = std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::scientific);
  std::string scientific(buffer, result.ptr);
  std::string sign;
  if (scientific[0] == '-') {
    sign = "-";
    scientific.erase(0, 1);
  }
  size_t e = scientific.find('e');
  std::string digits = scientific.substr(0, e);
  if (digits.size() > 1) digits.erase(1, 1);  // drop the '.'
  int exponent = std::atoi(scientific.c_str() + e + 1);
  int point = exponent + 1;  // digits before the decimal point
  int n = static_cast<int>(digits.size());
  if (point > -4 && point <= 16) {
    if (point <= 0) return sign + "0." + std::string(-point, '0') + digits;
    if (point >= n) return sign + digits + std::string(point - n, '0') + ".0";
    return sign + digits.substr(0, point) + "." + digits.substr(point);
  }
  std::string mantissa = digits.substr(0, 1);
  if (n > 1) mantissa.append(".").append(digits, 1);
  char exponent_text[16];
  std::snprintf(exponent_text, sizeof exponent_text, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  return sign + mantissa + exponent_text;
}

std::string dumps(const Value& value) {
  switch (value.type()) {
    case Value::value_t::null: return "null";
    case Value::value_t::boolean: return value.get<bool>() ? "true" : "false";
    case Value::value_t::number_integer: return std::to_string(value.get<int64_t>());
    case Value::value_t::number_unsigned: return std::to_string(value.get<uint64_t>());
    case Value::value_t::number_float: return python_float(value.get<double>());
    case Value::value_t::string: return quote(value.get_ref<const std::string&>());
    case Value::value_t::array: {
      std::string out = "[";
      for (const auto& element : value) out += (out.size() > 1 ? ", " : "") + dumps(element);
      return out + "]";
    }
    case Value::value_t::object: {
      std::string out = "{";
      for (const auto& [name, element] : value.items())
        out += (out.size() > 1 ? ", " : "") + quote(name) + ": " + dumps(element);
      return out + "}";
    }
    default: return "null";
  }
}

std::string short_value(const Value& value) {
  std::string text = value.is_number_float() ? python_float(value.get<double>()) : dumps(value);
  return text.size() <= 40 ? text : text.substr(0, 37) + "...";
}

std::string type_name(const Value& value) {
  switch (value.type()) {
    case Value::value_t::null: return "NoneType";
    case Value::value_t::boolean: return "bool";
    case Value::value_t::number_integer:
    case Value::value_t::number_unsigned: return "int";
    case Value::value_t::number_float: return "float";
    case Value::value_t::string: return "str";
    case Value::value_t::array: return "list";
    case Value::value_t::object: return "dict";
    default: return "object";
  }
}

}  // namespace fgm::json
