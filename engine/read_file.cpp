#include "engine/read_file.h"

#include "kernels/common.h"  // Error

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace dsk {

std::string read_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw Error(fmt::format("the {} {} is a folder, not a file", what, path));
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(fmt::format("cannot read the {} {}: {}", what, path, std::strerror(errno)));
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw Error(fmt::format("cannot read the {} {}: {}", what, path, std::strerror(errno)));
  return ss.str();
}

nlohmann::json probe_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) return nlohmann::json(nlohmann::json::value_t::discarded);
  return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
}

}  // namespace dsk
