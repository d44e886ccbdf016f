#pragma once

// Reaping for the signal-driven backends (selfpipe, signalfd, sigaction): a signal says "some child
// changed state" and may name one pid, but standard signals do not queue, so one SIGCHLD
// can stand for many exits and the pid it carries is only a hint. pid_reaper finds the
// watched children that have exited without ever reaping one it does not watch:
//
//   1. the hinted pids (from the signal, or a pid that had already exited when it was
//      watched) that are watched: waitid(P_PID, WNOHANG);
//   2. then a peek, waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT), which shows one zombie
//      without reaping it; each zombie that is ours is reaped with waitid(P_PID);
//   3. only when the peek shows a zombie that is not ours (it would hide ours behind it,
//      since the peek always returns the same one) does it ask every watched pid in turn:
//      O(watched) for that call only.
//
// waitpid(-1) is never used: children of other code stay waitable by their owners.
// Everything is bounded by the caller's per-iteration budget.

#include <sys/types.h>

#include <cstddef>
#include <unordered_set>
#include <vector>

#include <zreap/exit_status.hpp>

namespace zreap::detail {

class pid_reaper {
  public:
    /// @p who names the backend in error messages ("zreap selfpipe backend").
    explicit pid_reaper(const char* who) noexcept : who_(who) {}

    /// Starts watching @p pid. If it @p exited already (its signal may be long gone), it is
    /// looked at on the next reap() (has_hints() is true until then); a later exit comes
    /// with a signal of its own.
    void watch(pid_t pid, bool exited);
    /// Stops watching @p pid without reaping it.
    void unwatch(pid_t pid) noexcept { watched_.erase(pid); }

    /// A pid a signal named (si_pid, ssi_pid). Ignored unless watched; 0 is ignored.
    void hint(pid_t pid);
    /// True when no pid is watched.
    bool empty() const noexcept { return watched_.empty(); }

    /// True while hinted pids wait to be looked at: the loop should not block.
    bool has_hints() const noexcept { return !hints_.empty(); }

    /// Reaps at most @p max exited watched children and appends their statuses to @p out
    /// (each pid is then no longer watched). @p signalled: a SIGCHLD arrived since the last
    /// call, so children beyond the hints may have exited. Returns true if more may be
    /// waiting (the budget ran out, or hints are left), so the loop calls again without
    /// blocking. Throws std::system_error if waitid fails other than with ECHILD.
    bool reap(bool signalled, std::vector<exit_status>& out, std::size_t max);

  private:
    bool try_reap(pid_t pid, std::vector<exit_status>& out);
    void peek_and_reap(std::vector<exit_status>& out, std::size_t limit);
    void scan(std::vector<exit_status>& out, std::size_t limit);

    const char* who_;
    std::unordered_set<pid_t> watched_;
    std::vector<pid_t> hints_;
    std::vector<pid_t> scratch_;
    bool more_ = false;  // the last call ran out of budget: peek again next time
};

}  // namespace zreap::detail
