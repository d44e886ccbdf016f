#include "pipe.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "error.hpp"
#include "zreap_config.h"

namespace zreap::detail {

bool set_nonblock_cloexec(int fd) noexcept {
    int fl = ::fcntl(fd, F_GETFL);
    if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return false;
    int fdfl = ::fcntl(fd, F_GETFD);
    return fdfl >= 0 && ::fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) == 0;
}

pipe_pair make_nonblocking_pipe(const char* who) {
    int fds[2];
#if ZREAP_HAVE_PIPE2
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
        throw_errno(std::string(who) + ": pipe2");
    return {unique_fd(fds[0]), unique_fd(fds[1])};
#else
    // Without pipe2 a fork in another thread between pipe() and fcntl() can leak these
    // fds into that child; nothing portable closes that window.
    if (::pipe(fds) != 0)
        throw_errno(std::string(who) + ": pipe");
    pipe_pair p{unique_fd(fds[0]), unique_fd(fds[1])};
    if (!set_nonblock_cloexec(fds[0]) || !set_nonblock_cloexec(fds[1]))
        throw_errno(std::string(who) + ": fcntl");
    return p;
#endif
}

}  // namespace zreap::detail
