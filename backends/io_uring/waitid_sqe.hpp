#pragma once

// The one place that fills an IORING_OP_WAITID submission, used by the io_uring backend and
// by bench/waitid_queue.cpp.

#include <liburing.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <cstdint>

#include "zreap_config.h"

namespace zreap::detail {

/// IORING_OP_WAITID (Linux 6.7), for probing: linux-libc-dev before 6.7 lacks the name.
constexpr int io_uring_op_waitid = 50;

/// Fills @p sqe for an asynchronous waitid(P_PID, @p pid, @p si, @p options). The kernel
/// writes the siginfo to @p si when the request completes, so @p si must stay valid until
/// its completion has been read.
inline void prep_waitid(io_uring_sqe* sqe, pid_t pid, siginfo_t* si, int options) noexcept {
#if ZREAP_HAVE_IO_URING_PREP_WAITID
    io_uring_prep_waitid(sqe, P_PID, static_cast<id_t>(pid), si, options, 0);
#else
    // liburing < 2.5 (Debian 12 has 2.3) and linux-libc-dev < 6.7 know no IORING_OP_WAITID.
    // The kernel ABI (include/uapi/linux/io_uring.h, io_uring/waitid.c, Linux 6.7):
    //   opcode     IORING_OP_WAITID = 50
    //   fd         the id (here the pid)
    //   len        the idtype (P_PID)
    //   file_index the options (WEXITED, WNOWAIT, ...)
    //   addr2      the siginfo_t the kernel fills in
    //   rw_flags   waitid flags, none defined: 0
    // and every other field 0, which io_uring_prep_rw() sets.
    io_uring_prep_rw(io_uring_op_waitid, sqe, static_cast<int>(pid), nullptr,
                     static_cast<unsigned>(P_PID), 0);
    sqe->file_index = static_cast<__u32>(options);
    sqe->addr2 = reinterpret_cast<std::uintptr_t>(si);
#endif
}

}  // namespace zreap::detail
