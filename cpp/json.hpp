// A small JSON reader for model.json and the writer pieces that make fgm-predict's --json lines
// byte-identical to Python's json.dumps (ASCII escapes, float repr). Not a general JSON library.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fgm::json {

struct Value {
  enum class Kind { Null, Bool, Number, String, Array, Object };
  Kind kind = Kind::Null;
  bool boolean = false;
  double number = 0.0;
  std::string string;
  std::vector<Value> array;
  std::vector<std::pair<std::string, Value>> object;  // in file order

  // The member `key` of an object, or nullptr when absent or when this is not an object.
  const Value* find(std::string_view key) const;
  bool is_integer() const;
};

// Parses a whole document (RFC 8259); throws std::runtime_error("... at byte N") on malformed input.
Value parse(std::string_view text);

// A JSON string literal as Python's json.dumps writes it: non-ASCII as \uXXXX (surrogate pairs above
// U+FFFF), bytes that are not valid UTF-8 as \udcXX (Python's surrogateescape for file names).
std::string quote(std::string_view text);

// repr() of a Python float: the shortest digits that round-trip, fixed notation for exponents
// -4 <= e < 16, else d.ddde+XX; NaN and +-Infinity as json.dumps writes them.
std::string python_float(double value);

}  // namespace fgm::json
