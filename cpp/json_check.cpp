// fgm-json-check: a test driver for the JSON writer pieces (tests/test_native.py compares its answers
// with Python's own repr() and json.dumps). Reads lines from stdin, writes one answer line each:
//   "f HEXFLOAT"  -> fgm::json::python_float(value)   (HEXFLOAT as Python's float.hex() writes it)
//   "q HEXBYTES"  -> fgm::json::quote(bytes)
//   "p JSON"      -> "ok" when fgm::json::parse accepts the text, else "error"
#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <string>

#include "json.hpp"

int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.size() < 2) return 2;
    std::string argument = line.substr(2);
    if (line[0] == 'f') {
      std::cout << fgm::json::python_float(std::strtod(argument.c_str(), nullptr)) << '\n';
    } else if (line[0] == 'q') {
      std::string bytes;
      for (size_t i = 0; i + 1 < argument.size(); i += 2)
        bytes += static_cast<char>(std::stoi(argument.substr(i, 2), nullptr, 16));
      std::cout << fgm::json::quote(bytes) << '\n';
    } else if (line[0] == 'p') {
      try {
        fgm::json::parse(argument);
        std::cout << "ok\n";
      } catch (const std::runtime_error&) {
        std::cout << "error\n";
      }
    } else {
      return 2;
    }
  }
  return 0;
}
