// dynrnn: replacing a file so that a crash never leaves it half-written.
//
//   1. write the new contents to a temporary file in the same directory
//      (".<name>.tmp-<pid>-<n>", created exclusively);
//   2. fsync it, so its data is on disk before its name is;
//   3. rename() it over the target: on POSIX file systems this replaces the
//      directory entry in one step, so readers see the old file or the new one;
//   4. fsync the directory, so the rename itself survives a power cut.
//
// A process killed during 1-3 leaves the old file untouched (and possibly the
// temporary file, which nothing reads). POSIX only.
#pragma once

#include "safetensors.hpp"  // CheckpointError

#include <cerrno>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace dynrnn {

namespace detail {

inline std::string errno_text(int err) { return std::string(std::strerror(err)); }

// Writes all `size` bytes, retrying after signals and short writes.
inline bool write_all(int fd, const unsigned char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

inline int fsync_retrying(int fd) {
  int r;
  do r = ::fsync(fd);
  while (r != 0 && errno == EINTR);
  return r;
}

}  // namespace detail

/// \brief Replaces the file at `path` with `size` bytes from `data`, atomically and durably:
/// after a crash or `kill -9` at any moment, `path` holds either its old contents or all of
/// the new ones. The new file's permissions follow the process's umask (0666 & ~umask).
/// \throws CheckpointError naming `path` when any step fails; the temporary file is removed
/// and `path` is left as it was.
inline void write_file_atomically(const std::string& path, const unsigned char* data, std::size_t size) {
  const std::size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (base.empty()) throw CheckpointError(path, "the path names a directory, not a file");

  std::string tmp;
  int fd = -1;
  for (unsigned attempt = 0; fd < 0; ++attempt) {
    tmp = (dir == "/" ? "/" : dir + "/") + "." + base + ".tmp-" + std::to_string(::getpid()) + "-" +
          std::to_string(attempt);
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && (errno != EEXIST || attempt >= 1000))
      throw CheckpointError(path, "cannot create the temporary file '" + tmp + "': " + detail::errno_text(errno));
  }
  auto give_up = [&](const std::string& step) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw CheckpointError(path, step + ": " + detail::errno_text(err));
  };
  if (!detail::write_all(fd, data, size)) give_up("cannot write the temporary file '" + tmp + "'");
  if (detail::fsync_retrying(fd) != 0) give_up("cannot flush the temporary file '" + tmp + "' to disk");
  const int closed = ::close(fd);
  fd = -1;
  if (closed != 0) give_up("cannot close the temporary file '" + tmp + "'");
  if (::rename(tmp.c_str(), path.c_str()) != 0) give_up("cannot rename '" + tmp + "' over it");

  // The new name is in place; make the directory entry durable too.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) throw CheckpointError(path, "saved, but cannot open its directory to flush it: " + detail::errno_text(errno));
  const int synced = detail::fsync_retrying(dfd);
  const int err = errno;
  ::close(dfd);
  if (synced != 0) throw CheckpointError(path, "saved, but cannot flush its directory: " + detail::errno_text(err));
}

}  // namespace dynrnn
