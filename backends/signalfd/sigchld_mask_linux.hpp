#pragma once

// SIGCHLD blocked in every thread, for the backends that read it from a signalfd.
//
// A signalfd only sees a signal while it is pending. A process-directed SIGCHLD goes to
// any thread that does not block it (the thread that forked the child first); there, with
// the default disposition, it is discarded and the signalfd never sees it
// (ContractThreads.UnblockedThreadAfterLoop lost 3 exits out of 3 that way before the
// check below existed). So the signal must be blocked in every thread, and a backend that
// relies on it checks rather than hopes.

#include <pthread.h>
#include <sys/types.h>

#include <chrono>
#include <cstddef>
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
///
/// A thread whose mask has every signal blocked, the C library's internal ones included, is
/// not an answer: it is the mask libc (glibc >= 2.32, musl) gives a thread while it is
/// being created (the new thread until its start routine begins, and the creating thread
/// around clone() in pthread_create and posix_spawn), and a moment later the thread may
/// well leave SIGCHLD unblocked. Such a thread is *unsettled*: it is not recorded as
/// checked and is read again at every later check, until it shows another mask (blocked:
/// recorded; unblocked: refused) or it has shown that one for settle_window, after which it
/// is taken to block everything for good and recorded. No check ever waits for a thread.
/// Code that blocks "all" signals with sigfillset() and pthread_sigmask() (libzmq's I/O and
/// reaper threads) does not look unsettled: sigfillset leaves out the internal signals
/// (glibc's SIGCANCEL 32 and SIGSETXID 33), and glibc's pthread_sigmask refuses to block
/// them; SigBlk reads fffffffe7ffbfeff for a libzmq thread against fffffffffffbfeff for a
/// thread being born (glibc 2.36, Linux 6.18; SigchldThreadCheck.LibzmqThreadsAreSettled).
class sigchld_thread_check {
  public:
    /// How long a thread may show the all-blocked mask before it counts as settled.
    static constexpr std::chrono::milliseconds settle_window{100};

    /// @p who names the backend in error messages.
    explicit sigchld_thread_check(const char* who) noexcept : who_(who) {}

    /// Checks every other thread.
    void check_all() { check(false); }

    /// Checks only the threads that were not recorded at the last successful check: one
    /// listing of /proc/self/task, plus one status read per new or unsettled thread. A
    /// thread that was recorded and later unblocks SIGCHLD itself is not noticed; nothing
    /// can see that cheaply (the signalfd backend's SIGCHLD handler rescues its signals).
    void check_new() { check(true); }

    /// The threads found unsettled by the last successful check.
    std::size_t unsettled() const noexcept { return unsettled_.size(); }

  private:
    struct unsettled_thread {
        pid_t tid;
        std::chrono::steady_clock::time_point first_seen;
    };

    void check(bool only_new);

    const char* who_;
    std::vector<pid_t> seen_;                  // sorted: recorded (settled, blocking) threads
    std::vector<unsettled_thread> unsettled_;  // sorted by tid
};

}  // namespace zreap::detail
