#pragma once

// SIGCHLD blocked in every thread, for the backends that read it from a signalfd.
//
// A signalfd only sees a signal while it is pending. A process-directed SIGCHLD goes to
// any thread that does not block it (the thread that forked the child first); there, with
// the default disposition, it is discarded and the signalfd never sees it. facts.md
// measured 4/20 and 13/20 exits lost with one helper thread leaving SIGCHLD unblocked, and
// 20/20 when the forking thread did. So the signal must be blocked in every thread, and a
// backend that relies on it checks rather than hopes.

#include <pthread.h>
#include <sys/types.h>

#include <string>

namespace zreap::detail {

/// Blocks SIGCHLD in the calling thread for its lifetime. Destruction unblocks it again
/// only if it was unblocked when the guard was made, and only on that same thread (a
/// thread cannot change another's mask; destroyed elsewhere, the mask is left blocked).
class sigchld_block_guard {
  public:
    /// Throws std::system_error naming @p who if pthread_sigmask fails.
    explicit sigchld_block_guard(const char* who);
    ~sigchld_block_guard();
    sigchld_block_guard(const sigchld_block_guard&) = delete;
    sigchld_block_guard& operator=(const sigchld_block_guard&) = delete;

  private:
    pthread_t thread_;
    bool was_blocked_ = false;
};

/// A thread of this process, other than the calling one, that leaves SIGCHLD unblocked.
struct unblocked_thread {
    pid_t tid = 0;     ///< 0: every other thread blocks SIGCHLD
    std::string name;  ///< its /proc comm, when it could be read
};

/// Looks at every other thread's blocked mask (SigBlk in /proc/self/task/<tid>/status).
/// Throws std::system_error naming @p who if /proc/self/task cannot be read.
unblocked_thread find_thread_with_sigchld_unblocked(const char* who);

/// Throws std::system_error (EINVAL) naming @p who and the thread if any thread other than
/// the calling one leaves SIGCHLD unblocked, or if that cannot be checked.
void require_sigchld_blocked_in_other_threads(const char* who);

}  // namespace zreap::detail
