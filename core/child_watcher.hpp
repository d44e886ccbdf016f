#pragma once

// The child-watcher interface: what a backend implements and what the loop promises it.
//
// A backend turns "a watched child exited" into something zmq_poll() can wait on, and reaps
// those children. The loop owns exactly one child_watcher, made by the backend's factory in
// the backend table (backend_table.cpp), and calls it only from the loop's thread.
//
// One loop iteration, as the loop drives it:
//
//     timeout = wants_immediate_poll() ? 0 : min(user timeout, timers, max_wait_ms())
//     zmq_poll(items incl. wake_fd(), direct_fds(), timeout)   -- may return EINTR
//     reap({woken, interrupted, direct_revents}, out, max)     -- after every return
//     dispatch fds and sockets, then the exits in `out`, then timers
//
// watch() and unwatch() come between iterations, from user code or callbacks.

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <zreap/backend.hpp>
#include <zreap/exit_status.hpp>
#include <zreap/loop.hpp>

namespace zreap::detail {

/// What zmq_poll told the loop, passed to child_watcher::reap().
struct poll_result {
    /// wake_fd() was reported readable (or in error).
    bool woken = false;
    /// zmq_poll returned -1 with EINTR: a signal handler ran on the loop's thread.
    bool interrupted = false;
    /// The revents of the watcher's direct fds, one per entry of direct_fds() in the same
    /// order (0 for an unused entry), or nullptr if the watcher has none.
    const short* direct_revents = nullptr;
};

class child_watcher {
  public:
    virtual ~child_watcher() = default;

    /// The fd the loop polls for ZMQ_POLLIN, or -1 if the backend has none (sigaction).
    /// Constant for the watcher's life; the watcher owns it and it is close-on-exec.
    virtual int wake_fd() const noexcept = 0;

    /// Entries the watcher may put in the poll set beside wake_fd(), each polled for
    /// ZMQ_POLLIN and reported to reap() with its own revents. Constant for the watcher's
    /// life; 0 if it has none.
    virtual std::size_t direct_slots() const noexcept { return 0; }

    /// direct_slots() fds, -1 for an unused entry (poll() skips negative fds). The watcher
    /// may change the entries in watch(), unwatch() and reap(); the loop reads them right
    /// before every poll, so an fd in it must stay open until the watcher takes it out.
    /// It lets a backend wait on a few fds directly instead of through wake_fd() (the
    /// pidfd backend: one fewer system call per exit than epoll).
    virtual const int* direct_fds() const noexcept { return nullptr; }

    /// The longest the loop may block in one zmq_poll call, in ms, or -1 for no limit.
    /// Asked right before each poll. Only a backend that can lose a wakeup (sigaction), or
    /// that must look again at something no fd will announce (pidfd: a child whose exit a
    /// tracer holds), returns a limit; reap() is called when the poll returns, as always.
    virtual int max_wait_ms() const noexcept { return -1; }

    /// Start watching @p pid. The loop has checked that @p pid is an unreaped child of
    /// this process and that no zreap loop in the process watches it already. @p pidfd is
    /// a pidfd for it (-1 if none) that the loop owns and lends: it stays open at least
    /// until unwatch(pid) returns or reap() has reported pid, and the backend uses it
    /// without duplicating it (one fd per spawned child), never after that. @p exited: that check
    /// found the child a zombie already; reap() must then report it on the next iteration
    /// (wants_immediate_poll() returns true until then), since its notice (a SIGCHLD) may be long
    /// gone. Otherwise the exit has not happened yet and reaches the backend the usual way, so the
    /// backend need not look. Throws std::system_error on failure (EMFILE, ...), leaving nothing
    /// watched.
    virtual void watch(pid_t pid, int pidfd, bool exited) = 0;

    /// Stop watching @p pid without reaping it. Called only for a watched pid that reap()
    /// has not reported yet.
    virtual void unwatch(pid_t pid) noexcept = 0;

    /// Called right before each zmq_poll. True means exits may already be waiting that
    /// wake_fd() would not signal, so the loop polls with timeout 0 this time. The window
    /// between this call and zmq_poll is sigaction's lost-wakeup race.
    virtual bool wants_immediate_poll() noexcept = 0;

    /// Called after every return of zmq_poll, EINTR included. Reaps at most @p max exited
    /// watched children, appends their statuses to @p out (each pid is then no longer
    /// watched) and returns true if more may be waiting, in which case the loop calls
    /// again on its next iteration without blocking. Must never reap a child it does not
    /// watch unless the backend declares capabilities::reaps_foreign_children.
    virtual bool reap(const poll_result& r, std::vector<exit_status>& out, std::size_t max) = 0;

    /// Wakeups where exits were found although nothing had woken the poll for them
    /// (sigaction's race); 0 for race-free backends.
    virtual std::uint64_t lost_wakeups() const noexcept { return 0; }

    /// SIGCHLDs that reached a thread not blocking them and were turned into a wakeup by
    /// the backend's handler (signalfd's rescue pipe); 0 for the other backends.
    virtual std::uint64_t rescued_signals() const noexcept { return 0; }
};

/// One row of the backend table. Each compiled backend defines one, named
/// <name>_backend_entry, in its backends/<name>/ source.
struct backend_entry {
    backend id;
    capabilities caps;
    /// Runtime probe behind backend_usable(): cheap, never throws, never caches (a seccomp
    /// filter or a SIGCHLD disposition can change between calls).
    bool (*usable)() noexcept;
    /// Builds a watcher; throws std::system_error with the reason it cannot.
    std::unique_ptr<child_watcher> (*create)(const loop_options& options);
    /// Why usable() says false, for the error that names the backend ("unusable while
    /// SIGCHLD is set to SIG_IGN"), or "" (and for a null pointer): "not usable in this
    /// process".
    std::string (*why_unusable)() noexcept = nullptr;
};

/// The compiled backend @p b, or nullptr.
const backend_entry* find_backend(backend b) noexcept;

/// The entry for @p b; throws std::system_error naming @p origin if it is not compiled in
/// or not usable here.
const backend_entry& require_usable(backend b, const std::string& origin);

/// Why the process's SIGCHLD disposition makes the kernel reap children by itself
/// ("SIGCHLD is set to SIG_IGN", "SIGCHLD has SA_NOCLDWAIT"), or nullptr if it does not.
const char* sigchld_disposition_problem() noexcept;

/// sigchld_disposition_problem() as a backend_entry::why_unusable, for the backends that
/// need SIGCHLD delivered.
std::string sigchld_why_unusable() noexcept;

/// Throws std::system_error (EINVAL) naming @p who if sigchld_disposition_problem().
void require_reapable_sigchld(const char* who);

/// Claims @p pid for one zreap loop in this process; false if another loop (or the same
/// one) has it already. Thread-safe.
bool claim_pid(pid_t pid);
/// Counts a new loop of backend @p b. A backend that reaps every child of the process
/// (libev) would take the exits of other loops' children, so such a loop and any other
/// zreap loop never live at the same time: throws std::system_error (EBUSY) instead.
void register_loop(backend b, bool reaps_foreign_children);
/// Undoes register_loop().
void unregister_loop(bool reaps_foreign_children) noexcept;

/// Gives up a claim made by claim_pid().
void release_pid(pid_t pid) noexcept;

}  // namespace zreap::detail
