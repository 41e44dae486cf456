#pragma once
// One way to read a user's file whole, with the errors a user can act on: a missing file, a folder given where
// a file was expected, a read that fails midway, each a one-line message naming the path and what it was for.
#include <nlohmann/json_fwd.hpp>

#include <string>

namespace dsk {

// The bytes of `path`. `what` names the file in messages ("config", "prompt file", "corpus").
std::string read_file(const std::string& path, const std::string& what);

// The JSON in `path`, or a discarded value (is_discarded(), not an object) when the file is missing, unreadable or
// not JSON: for probing files (is this dsk's?) whose absence or damage the caller explains in its own words.
nlohmann::json probe_json(const std::string& path);

}  // namespace dsk
