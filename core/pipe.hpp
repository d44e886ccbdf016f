#pragma once

#include "unique_fd.hpp"

namespace zreap::detail {

struct pipe_pair {
    unique_fd read;
    unique_fd write;
};

/// A pipe with both ends close-on-exec and non-blocking (pipe2 where the libc has it,
/// pipe + fcntl elsewhere). Throws std::system_error naming @p who.
pipe_pair make_nonblocking_pipe(const char* who);

/// Sets O_NONBLOCK and FD_CLOEXEC on @p fd; false with errno on failure.
bool set_nonblock_cloexec(int fd) noexcept;

}  // namespace zreap::detail
