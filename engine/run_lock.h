#pragma once
// One `dsk train` at a time per run folder: two processes appending to one metrics.jsonl and replacing each
// other's checkpoints would both finish "successfully" with a corrupt run. The lock is an flock on a file in the
// temporary folder named after the run folder's real path (the run folder may not exist yet, and nothing is added
// to it); the kernel drops it when the process ends, however it ends. It keeps out processes on this machine that
// see the same temporary folder ($TMPDIR, else /tmp), not those of another machine sharing the run folder.
// The holder deletes the file when it lets go, so a temporary folder does not fill with one per run ever trained
// (a process killed outright leaves its file; the next run of that folder reuses and then deletes it).
#include <string>

namespace dsk {

class RunLock {
 public:
  RunLock() = default;
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  // Takes the lock of `run_dir` (releasing any held before); false, holding nothing, when another process has it.
  bool try_acquire(const std::string& run_dir);
  // try_acquire, or throw Error naming the run folder and the process that holds it.
  void acquire(const std::string& run_dir);
  void release();

  // The lock file of `run_dir`.
  static std::string lock_file(const std::string& run_dir);
  // The pid of the process holding `run_dir`'s lock ("?" when it wrote none), or "" when nobody holds it. Only
  // asks: takes nothing, creates and deletes nothing.
  static std::string holder(const std::string& run_dir);

 private:
  int fd_ = -1;
  std::string path_;  // the lock file held
};

}  // namespace dsk
