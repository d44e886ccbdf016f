#pragma once

/// @file
/// How a child ended.

#include <sys/types.h>
#include <sys/wait.h>

#include <chrono>
#include <string>

#include <zreap/export.hpp>

struct rusage;

namespace zreap {

/// The resources a child used, as the system call that reaped it reported them: the child's
/// own CPU time and peak memory, plus those of its descendants that it waited for itself.
struct resource_usage {
    std::chrono::microseconds user_cpu{0};    ///< CPU time in user mode
    std::chrono::microseconds system_cpu{0};  ///< CPU time in the kernel
    long max_rss_kib = 0;                     ///< peak resident set size, KiB
};

/// How a child process ended, as reaped by the loop.
struct exit_status {
    /// The child's process id (already reaped: the number may be reused by now).
    pid_t pid = 0;
    /// The wait(2)-style status word; the accessors below decode it.
    int raw = 0;
    /// True when the backend reaped the child with a call that reports resource usage
    /// (capabilities::reports_usage): then usage holds it. False with the libev backend,
    /// whose library reaps without it, and for unknown() statuses.
    bool has_usage = false;
    /// What the child used; meaningful when has_usage.
    resource_usage usage;

    /// raw's value when the child was reaped by someone else before zreap could read its
    /// status (a waitpid(-1) elsewhere, SIGCHLD set to SIG_IGN after watch_child).
    static constexpr int unknown_raw = -1;

    /// The child is gone but its status was taken by other code: neither exited() nor
    /// signaled() holds.
    bool unknown() const noexcept { return raw == unknown_raw; }
    /// The child called exit() or returned from main().
    bool exited() const noexcept { return !unknown() && WIFEXITED(raw); }
    /// Its exit code (0-255); meaningful when exited().
    int exit_code() const noexcept { return exited() ? WEXITSTATUS(raw) : -1; }
    /// The child was killed by a signal.
    bool signaled() const noexcept { return !unknown() && WIFSIGNALED(raw); }
    /// The signal that killed it; meaningful when signaled().
    int term_signal() const noexcept { return signaled() ? WTERMSIG(raw) : 0; }
    /// The kernel wrote a core dump when the signal killed it.
    ZREAP_API bool core_dumped() const noexcept;

    /// Builds a status from a waitid(2) result (si_pid, si_code, si_status).
    ZREAP_API static exit_status from_siginfo(const siginfo_t& info) noexcept;
    /// Builds a status from a waitpid(2) status word.
    ZREAP_API static exit_status from_wait_status(pid_t pid, int status) noexcept;
    /// Sets has_usage and usage from a getrusage-style record (wait4, waitid's rusage).
    ZREAP_API void set_usage(const struct rusage& ru) noexcept;

    /// Same pid and same status word (usage is not compared).
    friend bool operator==(const exit_status& a, const exit_status& b) noexcept {
        return a.pid == b.pid && a.raw == b.raw;
    }
    /// Not operator==.
    friend bool operator!=(const exit_status& a, const exit_status& b) noexcept {
        return !(a == b);
    }
};

/// "pid 1234 exited with code 3", "pid 1234 killed by signal 9 (SIGKILL), core dumped".
ZREAP_API std::string to_string(const exit_status& s);

}  // namespace zreap
