#pragma once

// One process-wide SIGCHLD handler shared by every loop of the signal-handler backends
// (selfpipe, sigaction, libev), and by the signalfd backend for its safety net. A handler is a
// process-wide resource: if each loop installed its own, the second would overwrite the first and
// the first loop's destruction would restore a disposition that the second still needs. The hub
// installs the handler when the first subscriber arrives, restores exactly what it found when the
// last one leaves, and fans each signal out to every subscriber:
//
//   - a pipe subscriber gets the exited child's pid (si_pid, 0 if unknown) written to its
//     pipe, as one atomic sizeof(pid_t) write; a full pipe is already readable, so EAGAIN
//     is ignored and only the hint is lost;
//   - a flag subscriber gets the exited child's pid stored in its sigchld_hints (when the
//     kernel sent the signal and the ring has room), then its flag set; and when the
//     signal was raised by the kernel on a thread other than the subscriber's, the signal
//     is forwarded there with pthread_kill so that the subscriber's zmq_poll returns EINTR.
//
// A handler that was installed before the hub (the application's own) keeps being called
// after the fan-out, and is put back when the last subscriber leaves.

#include <pthread.h>
#include <sys/types.h>

#include <atomic>
#include <cstddef>

#include "pipe.hpp"

namespace zreap::detail {

/// The pids the SIGCHLD handler saw (si_pid) for one flag subscriber: a fixed array of
/// atomic entries, 0 meaning empty, that the handler fills and the subscriber's thread
/// empties. They are hints, as a pipe subscriber's pids are: standard signals coalesce, so
/// one pid may stand for several exits, and a full array drops the pid (counted in
/// dropped()); the flag is set either way, and the subscriber's peek finds the rest.
///
/// Why it is safe with any number of handlers at once (handlers on two threads can run
/// together, and the taker beside them; SIGCHLD cannot nest on one thread, since the hub
/// installs its handler without SA_NODEFER, but nothing below would break if it did,
/// because nothing waits for anything):
///   - an entry only ever changes by a single atomic step: put() by a compare-exchange from
///     0 to the pid, take() by an exchange back to 0;
///   - so two put()s can never both own one entry (only one compare-exchange from 0
///     succeeds; the other goes on to the next entry), and a stored pid is returned by
///     exactly one exchange, so take() returns each stored pid once, and a pid is never
///     overwritten before it was taken;
///   - put() looks at each entry at most once, so it finishes in at most `capacity` steps
///     whatever the other threads do (wait-free), and uses nothing but lock-free atomics
///     (async-signal-safe);
///   - put() stores with release and the handler sets the flag after it, so a taker that
///     has seen the flag (acquire) sees every pid stored before it. A pid stored after the
///     taker passed its entry stays there for the next take(); the flag, set after it,
///     brings the taker back.
/// Only one thread may call take() at a time (the subscriber's loop thread).
class sigchld_hints {
  public:
    static constexpr std::size_t capacity = 64;

    sigchld_hints() noexcept;
    sigchld_hints(const sigchld_hints&) = delete;
    sigchld_hints& operator=(const sigchld_hints&) = delete;

    /// Stores @p pid (> 0) in a free entry; false, and counted, if every entry is taken.
    /// Async-signal-safe and wait-free.
    bool put(pid_t pid) noexcept;

    /// Empties the entries, writing up to @p max pids to @p out; returns how many. Any
    /// left (when @p max is smaller than what is stored) stay for the next call.
    std::size_t take(pid_t* out, std::size_t max) noexcept;

    /// How many pids put() dropped because every entry was taken (wraps around).
    unsigned dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }

  private:
    static_assert(std::atomic<pid_t>::is_always_lock_free, "the handler may use no lock");
    static_assert(std::atomic<unsigned>::is_always_lock_free, "the handler may use no lock");
    std::atomic<pid_t> entries_[capacity];
    std::atomic<unsigned> dropped_{0};
};

/// Subscribes a non-blocking pipe write end; returns a slot for unsubscribe(). Throws
/// std::system_error if SIGCHLD is ignored or the slots are exhausted.
int sigchld_subscribe_pipe(int write_fd, const char* who);

/// Subscribes a flag that the handler sets to 1, and the thread that should be interrupted.
/// When @p hints is not null, the handler first puts there the pid of each child the kernel
/// signalled about. Throws like sigchld_subscribe_pipe().
int sigchld_subscribe_flag(std::atomic<int>* flag, sigchld_hints* hints, pthread_t thread,
                           const char* who);

/// Changes the thread a flag subscriber's signal is forwarded to.
void sigchld_set_thread(int slot, pthread_t thread) noexcept;

/// Reserves SIGCHLD for a loop that blocks it in every thread and reads it from a signalfd
/// (the signalfd backend). A blocked SIGCHLD never reaches the hub's handler, and of two
/// signalfds for it whichever is read first consumes the signal, so while the reservation
/// is held there may be no subscriber but the holder's own rescue pipe (below) and no
/// second reservation, and subscribing fails. Throws std::system_error (EBUSY) naming
/// @p who if that cannot be had.
void sigchld_reserve_for_signalfd(const char* who);

/// Subscribes the rescue pipe of the loop holding the signalfd reservation, the one
/// subscriber the reservation admits: a SIGCHLD that reaches a thread which does not block
/// it (so the signalfd never sees it) runs the handler there, which writes the pid to this
/// pipe, in the signalfd loop's poll set. Throws std::system_error (EBUSY) if no
/// reservation is held or a rescue pipe is subscribed already.
int sigchld_subscribe_signalfd_rescue(int write_fd, const char* who);

/// Gives up the reservation made by sigchld_reserve_for_signalfd().
void sigchld_release_signalfd() noexcept;

/// A pipe subscriber, whole: the non-blocking, close-on-exec pipe, its subscription (made
/// by subscribe(), so that a backend can choose the moment) and the reading of the pids the
/// handler wrote. The selfpipe and libev backends poll fd() as their wake fd.
class sigchld_pipe {
  public:
    /// Makes the pipe; throws std::system_error naming @p who.
    explicit sigchld_pipe(const char* who);
    ~sigchld_pipe();
    sigchld_pipe(const sigchld_pipe&) = delete;
    sigchld_pipe& operator=(const sigchld_pipe&) = delete;

    /// Subscribes the pipe (sigchld_subscribe_pipe); at most once.
    void subscribe();

    /// Subscribes the pipe as the signalfd reservation's rescue pipe
    /// (sigchld_subscribe_signalfd_rescue); at most once.
    void subscribe_signalfd_rescue();

    /// The read end, for the poll set.
    int fd() const noexcept { return pipe_.read.get(); }

    /// Reads everything the handler wrote, handing each pid (0: unknown) to @p on_pid, and
    /// returns true if anything was read. Called before reaping: a SIGCHLD after it makes
    /// the pipe readable again, so nothing is lost. A read error other than EAGAIN leaves
    /// the pipe as it is (the caller's peek still runs).
    template <typename F>
    bool take(F on_pid) {
        pid_t buf[512];
        bool got = false;
        drain_fd(pipe_.read.get(), buf, sizeof buf, [&](std::size_t n) {
            got = true;
            for (std::size_t i = 0; i < n / sizeof(pid_t); ++i)
                on_pid(buf[i]);
        });
        return got;
    }

  private:
    const char* who_;
    pipe_pair pipe_;
    int slot_ = -1;
};

/// Ends a subscription. When it returns, the handler no longer uses the slot's fd, flag or
/// hints, so the caller may close or free them.
void sigchld_unsubscribe(int slot) noexcept;

}  // namespace zreap::detail
