#include "engine/run_lock.h"

#include "engine/paths.h"
#include "engine/sha256.h"
#include "kernels/common.h"  // Error

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace fs = std::filesystem;

namespace dsk {
namespace {

// One lock file per run folder, whatever path names it ("runs/x", "./runs/x/", a symbolic link to it).
fs::path lock_path(const std::string& run_dir) {
  std::error_code ec;
  fs::path real = fs::weakly_canonical(absolute_path(run_dir), ec);
  if (ec) real = absolute_path(run_dir);  // (a path that cannot be resolved, e.g. a link loop: as written)
  fs::path tmp = fs::temp_directory_path(ec);
  if (ec) tmp = "/tmp";  // TMPDIR names nothing usable
  return tmp / fmt::format("dsk-run-{}.lock", sha256_hex(real.string()).substr(0, 24));
}

// Whether the open file `fd` is the one `path` names now.
bool is_at_path(int fd, const std::string& path) {
  struct stat held, named;
  return fstat(fd, &held) == 0 && stat(path.c_str(), &named) == 0 && held.st_dev == named.st_dev &&
         held.st_ino == named.st_ino;
}

}  // namespace

std::string RunLock::lock_file(const std::string& run_dir) { return lock_path(run_dir).string(); }

RunLock::~RunLock() { release(); }

void RunLock::release() {
  if (fd_ < 0) return;
  // Deleted while still locked, then closed (which drops the flock). A process that opened the file before the
  // delete and locks it after finds it no longer at its path, and starts again (try_acquire). Only our own file
  // goes: if something else removed it meanwhile (a /tmp cleaner), the file now there is another holder's.
  if (is_at_path(fd_, path_)) unlink(path_.c_str());
  close(fd_);
  fd_ = -1;
  path_.clear();
}

bool RunLock::try_acquire(const std::string& run_dir) {
  release();
  const fs::path path = lock_path(run_dir);
  // (each retry means a holder deleted the file between our open and our flock: a handful at most)
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
      throw Error(fmt::format("cannot create the run lock {}: {} (set TMPDIR to a writable folder)", path.string(),
                              std::strerror(errno)));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      close(fd);
      return false;
    }
    // Locked the file at the path, or one its holder deleted in the meantime (then nobody else sees ours)?
    if (is_at_path(fd, path.string())) {
      // The holder's pid, for the message a second process prints (the lock holds without it: failures ignored).
      const std::string pid = std::to_string(getpid()) + "\n";
      if (ftruncate(fd, 0) == 0) (void)!pwrite(fd, pid.data(), pid.size(), 0);
      fd_ = fd;
      path_ = path.string();
      return true;
    }
    close(fd);
  }
  throw Error(fmt::format("cannot take the run lock {}: it keeps being replaced", path.string()));
}

std::string RunLock::holder(const std::string& run_dir) {
  // Opened without creating it and never deleted: asking must not disturb a holder or a locker.
  const fs::path path = lock_path(run_dir);
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  std::string pid;
  if (flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
    char buf[32] = {};  // "<pid>\n"
    const ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    const size_t digits = n > 0 ? std::strspn(buf, "0123456789") : 0;
    pid = digits > 0 ? std::string(buf, digits) : "?";
  }
  close(fd);  // (drops the shared lock if we got it)
  return pid;
}

void RunLock::acquire(const std::string& run_dir) {
  if (try_acquire(run_dir)) return;
  const std::string pid = holder(run_dir);  // ("" if it let go meanwhile, "?" if it wrote no pid)
  throw Error(fmt::format("another dsk train{} is writing into {}; wait for it to finish, or choose another --out",
                          pid.empty() || pid == "?" ? "" : " (process " + pid + ")", run_dir));
}

}  // namespace dsk
