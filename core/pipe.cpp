#include "pipe.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "error.hpp"
#include "zreap_config.h"

namespace zreap::detail {

pipe_pair make_cloexec_pipe(bool nonblocking, const std::string& what) {
    int fds[2];
#if ZREAP_HAVE_PIPE2
    if (::pipe2(fds, O_CLOEXEC | (nonblocking ? O_NONBLOCK : 0)) != 0)
        throw_errno(what + ": pipe2");
    return {unique_fd(fds[0]), unique_fd(fds[1])};
#else
    // Without pipe2 a fork in another thread between pipe() and fcntl() can leak these
    // fds into that child; nothing portable closes that window.
    if (::pipe(fds) != 0)
        throw_errno(what + ": pipe");
    pipe_pair p{unique_fd(fds[0]), unique_fd(fds[1])};
    for (int fd : fds) {
        if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0)
            throw_errno(what + ": fcntl(FD_CLOEXEC)");
        // A pipe end just made has no file status flag to keep: no F_GETFL.
        if (nonblocking && ::fcntl(fd, F_SETFL, O_NONBLOCK) != 0)
            throw_errno(what + ": fcntl(O_NONBLOCK)");
    }
    return p;
#endif
}

}  // namespace zreap::detail
