// Paths in fgm-predict's text lines and problem lines, escaped as fastgradmix/deploy/printable.py
// escapes them, so one image is always one line: backslash as \\; tab, newline, carriage return as
// \t, \n, \r; other control characters (U+0000-U+001F, U+007F-U+009F) as \xNN; a byte that is not
// UTF-8 as \udcNN (Python's surrogateescape). Everything else is kept.
#pragma once

#include <string>
#include <string_view>

namespace fgm {

std::string printable(std::string_view path);

// A path as Python's pathlib prints it: repeated and trailing slashes and "." parts dropped
// ("./models//m/" -> "models/m"), so messages naming the model folder read the same from both.
std::string pathlib_string(std::string_view path);

// folder / name as pathlib joins them ("." / "a" -> "a", "/" / "a" -> "/a").
std::string join_path(const std::string& folder, const std::string& name);

}  // namespace fgm
