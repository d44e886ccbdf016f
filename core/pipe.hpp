#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <string>

#include "unique_fd.hpp"

namespace zreap::detail {

struct pipe_pair {
    unique_fd read;
    unique_fd write;
};

/// A pipe with both ends close-on-exec, and with @p nonblocking both ends non-blocking
/// (pipe2 where the libc has it, pipe + fcntl elsewhere). Throws std::system_error naming
/// @p what.
pipe_pair make_cloexec_pipe(bool nonblocking, const std::string& what);

/// Reads the non-blocking @p fd into @p buf until nothing is left, retrying on EINTR and
/// handing the byte count of each read to @p got. Returns 0 once drained (EAGAIN, end of
/// file, or a read shorter than @p size), or the errno of a read that failed otherwise.
/// The wake fds of the signal-driven backends are drained this way before reaping, so that
/// a signal after the drain re-arms them and nothing is lost.
///
/// A short read ends it without a last read that would say EAGAIN: a pipe or a signalfd
/// read returns everything there is up to @p size, so a short one left the fd empty, and
/// anything written after it makes the fd readable again for the next poll. That saves a
/// system call per wakeup.
template <typename F>
int drain_fd(int fd, void* buf, std::size_t size, F got) {
    for (;;) {
        ssize_t n = ::read(fd, buf, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : errno;
        if (n == 0)
            return 0;
        got(static_cast<std::size_t>(n));
        if (static_cast<std::size_t>(n) < size)
            return 0;
    }
}

}  // namespace zreap::detail
