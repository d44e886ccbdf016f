#pragma once

// waitid through the system call, for the Linux backends (pidfd, io_uring). The system
// call has a fifth argument, the child's resource usage, which glibc's waitid() does not
// pass; exit_status::usage comes from it. Included only by Linux-only files.

#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

namespace zreap::detail {

/// waitid(@p idtype, @p id, @p si, @p options), filling @p ru when it is not null; retried
/// on EINTR. Returns 0 or -1 with errno set, as waitid() does.
inline int waitid_with_usage(idtype_t idtype, id_t id, siginfo_t* si, int options,
                             struct rusage* ru = nullptr) noexcept {
    int rc;
    while ((rc = static_cast<int>(::syscall(SYS_waitid, idtype, id, si, options, ru))) < 0 &&
           errno == EINTR) {
    }
    return rc;
}

}  // namespace zreap::detail
