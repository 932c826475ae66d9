// model.json reading through nlohmann/json, held to the rules of fastgradmix/common/schema.py
// (parse_json_text + check_portable), and the writer pieces that make fgm-predict's --json lines and
// messages byte-identical to Python's json.dumps / repr.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace fgm::json {

using Value = nlohmann::ordered_json;  // objects keep their file order, as Python's dicts do

constexpr size_t kMaxBytes = 16 * 1024 * 1024;  // schema.MAX_JSON_BYTES
constexpr int kMaxDepth = 64;                   // schema.MAX_JSON_DEPTH

// A refused document; what() is the whole message, "<label>: <why>".
class JsonError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Parses bytes as schema.parse_json_text followed by schema.check_portable do, refusing in the same
// order with the same words: larger than kMaxBytes, not valid UTF-8 (byte N), nested deeper than
// kMaxDepth (counted over the raw text), then "not valid JSON (...)" for syntax, a byte-order mark,
// duplicate keys, non-finite numbers, integers outside int64 and lone surrogates.
Value parse_strict(std::string_view bytes, const std::string& label);

// The offset of the first byte that does not start a valid UTF-8 sequence (Python's
// UnicodeDecodeError.start), or npos when the whole text is valid.
size_t first_invalid_utf8(std::string_view text);

// Decodes one UTF-8 sequence at text[i]; returns its length (0 when invalid) and the code point.
size_t decode_utf8(std::string_view text, size_t i, unsigned& code);

// The number of code points of valid UTF-8 text (Python's len of the str).
size_t code_points(std::string_view text);

// A JSON string literal as Python's json.dumps writes it: non-ASCII as \uXXXX (surrogate pairs above
// U+FFFF), bytes that are not valid UTF-8 as \udcXX (Python's surrogateescape for file names).
std::string quote(std::string_view text);

// repr() of a Python float: the shortest digits that round-trip, fixed notation for exponents
// -4 <= e < 16, else d.ddde+XX; NaN and +-Infinity as json.dumps writes them.
std::string python_float(double value);

// json.dumps(value) with Python's defaults (", " and ": " separators, ASCII escapes, float repr).
std::string dumps(const Value& value);

// schema.short_value: a float's repr, anything else json.dumps, cut to 37 characters + "..." past 40.
std::string short_value(const Value& value);

// Python's type name of a parsed value: NoneType, bool, int, float, str, list, dict.
std::string type_name(const Value& value);

}  // namespace fgm::json
