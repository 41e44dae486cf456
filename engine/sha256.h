#pragma once
// SHA-256 (FIPS 180-4), for recording which files a prepared dataset was made with.
#include <string>
#include <string_view>

namespace dsk {

std::string sha256_hex(std::string_view data);   // lowercase hex digest
std::string sha256_file(const std::string& path);  // throws dsk::Error naming the file when unreadable

}  // namespace dsk
