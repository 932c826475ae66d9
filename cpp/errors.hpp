// A problem the user can fix (bad model folder, bad option): one line on stderr, exit code 2.
#pragma once

#include <stdexcept>

namespace fgm {

class UserError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace fgm
