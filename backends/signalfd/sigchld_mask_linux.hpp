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
#include <vector>

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

/// Checks that every thread other than the calling one blocks SIGCHLD, from SigBlk in
/// /proc/self/task/<tid>/status (20-30 us per thread measured: the kernel formats the whole
/// file). Failures throw std::system_error naming the thread (EINVAL), or saying that
/// /proc/self/task cannot be read.
class sigchld_thread_check {
  public:
    /// @p who names the backend in error messages.
    explicit sigchld_thread_check(const char* who) noexcept : who_(who) {}

    /// Checks every other thread.
    void check_all() { check(false); }

    /// Checks only the threads that did not exist at the last successful check: one listing
    /// of /proc/self/task, plus one status read per new thread. A thread that was checked
    /// and later unblocks SIGCHLD itself is not noticed; nothing can see that cheaply.
    void check_new() { check(true); }

  private:
    void check(bool only_new);

    const char* who_;
    std::vector<pid_t> seen_;  // sorted: the other threads at the last successful check
};

}  // namespace zreap::detail
