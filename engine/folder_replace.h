#pragma once
// Writing a folder so that nobody sees it half-written: the new contents go into a temporary sibling,
// <final>.tmp-<pid>; commit() then moves the old <final> (if any) to <final>.old-<pid>, the new one into place, and
// deletes the old one last. If the swap fails the old folder is put back. A process killed mid-way leaves only
// siblings named that way (replace_leftover_stem recognises them); <final> itself is the old or the new folder.
// Used by checkpoints (engine/checkpoint.cpp) and prepared data (engine/prepare.cpp).
#include <filesystem>
#include <string>

namespace dsk {

class FolderReplace {
 public:
  // Creates the empty temporary sibling (removing a stale one this pid left); throws Error if it cannot.
  explicit FolderReplace(const std::filesystem::path& final_dir);
  // Removes the temporary folder unless commit() succeeded.
  ~FolderReplace();
  FolderReplace(const FolderReplace&) = delete;
  FolderReplace& operator=(const FolderReplace&) = delete;

  // Where the new contents are written.
  const std::filesystem::path& dir() const { return tmp_; }
  // Swaps the written folder in; throws Error("cannot replace <final>: <reason>") with the old folder restored.
  void commit();

 private:
  std::filesystem::path final_, tmp_;
  bool committed_ = false;
};

// What a leftover of an interrupted replace of <stem> is called: "<stem>.tmp-<pid>" (the new contents, maybe
// incomplete) or "<stem>.old-<pid>" (the complete previous folder).
struct ReplaceLeftover {
  std::string stem;   // "" when the name is no such leftover
  long long pid = 0;  // the writing process (0 when the digits do not fit a pid)
  bool old_copy = false;
};
ReplaceLeftover parse_replace_leftover(const std::string& name);

// parse_replace_leftover(name).stem.
std::string replace_leftover_stem(const std::string& name);

}  // namespace dsk
