// fgm-json-check: a test driver for the pieces of fgm-predict that need no libtorch (tests/test_native.py
// compares its answers with Python's). Reads lines from stdin, writes one answer each (the s command:
// several lines, then an empty one):
//   "f HEXFLOAT"  -> fgm::json::python_float(value)   (HEXFLOAT as Python's float.hex() writes it)
//   "q HEXBYTES"  -> fgm::json::quote(bytes)
//   "p JSON"      -> "ok" when fgm::json::parse_strict accepts the text, else "error"
//   "P HEXBYTES"  -> "ok", or parse_strict's message for the bytes labelled "L"
//   "m HEXBYTES"  -> "ok", or the first problem of the bytes as model.json labelled "L" (parse + schema)
//   "e HEXBYTES"  -> fgm::printable(bytes)
//   "n HEXBYTES"  -> fgm::pathlib_string(bytes)
//   "s"           -> fgm::describe_schema()
#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <string>

#include "errors.hpp"
#include "json.hpp"
#include "model_schema.hpp"
#include "printable.hpp"

namespace {

std::string from_hex(const std::string& hex) {
  std::string bytes;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) bytes += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return bytes;
}

}  // namespace

int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line == "s") {
      std::cout << fgm::describe_schema() << '\n';
      continue;
    }
    if (line.size() < 2) return 2;
    std::string argument = line.substr(2);
    char command = line[0];
    if (command == 'f') {
      std::cout << fgm::json::python_float(std::strtod(argument.c_str(), nullptr)) << '\n';
    } else if (command == 'q') {
      std::cout << fgm::json::quote(from_hex(argument)) << '\n';
    } else if (command == 'p') {
      try {
        fgm::json::parse_strict(argument, "L");
        std::cout << "ok\n";
      } catch (const fgm::json::JsonError&) {
        std::cout << "error\n";
      }
    } else if (command == 'P' || command == 'm') {
      try {
        fgm::json::Value document = fgm::json::parse_strict(from_hex(argument), "L");
        if (command == 'm') fgm::check_meta(document, "L");
        std::cout << "ok\n";
      } catch (const std::runtime_error& error) {  // JsonError, UserError
        std::cout << error.what() << '\n';
      }
    } else if (command == 'e') {
      std::cout << fgm::printable(from_hex(argument)) << '\n';
    } else if (command == 'n') {
      std::cout << fgm::pathlib_string(from_hex(argument)) << '\n';
    } else {
      return 2;
    }
  }
  return 0;
}
