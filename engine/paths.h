#pragma once
// Where dsk finds its shipped files (the GPT-2 BPE files, the embedded Tiny Shakespeare corpus).
#include <string>

namespace dsk {

// The data folder: $DSK_DATA_DIR if set, else <dir of the dsk binary>/../data or <dir>/data when present,
// else the source tree's data/ folder this binary was built from. Throws when none holds encoder.json.
std::string data_dir();

// The per-user cache folder for prepared corpora: $DSK_CACHE_DIR, else $XDG_CACHE_HOME/dsk, else ~/.cache/dsk.
std::string cache_dir();

}  // namespace dsk
