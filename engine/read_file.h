#pragma once
// One way to read a user's file whole, with the errors a user can act on: a missing file, a folder given where
// a file was expected, a read that fails midway, each a one-line message naming the path and what it was for.
#include <string>

namespace dsk {

// The bytes of `path`. `what` names the file in messages ("config", "prompt file", "corpus").
std::string read_file(const std::string& path, const std::string& what);

}  // namespace dsk
