#pragma once
// Where dsk finds its shipped files (the GPT-2 BPE files, the embedded Tiny Shakespeare corpus).
#include <filesystem>
#include <string>

namespace dsk {

// The data folder: $DSK_DATA_DIR if set, else <dir of the dsk binary>/../data or <dir>/data when present,
// else the source tree's data/ folder this binary was built from. Throws when none holds encoder.json.
std::string data_dir();

// The per-user cache folder for prepared corpora: $DSK_CACHE_DIR, else $XDG_CACHE_HOME/dsk (an absolute path),
// else ~/.cache/dsk; an empty variable counts as unset.
std::string cache_dir();

// `path` made absolute and normal, without a trailing separator: "runs/x/", "./runs/x" and "runs/x" name one
// folder, whose parent is runs (a shell's completion adds the slash; lexically_normal keeps it).
std::filesystem::path absolute_path(const std::string& path);

}  // namespace dsk
