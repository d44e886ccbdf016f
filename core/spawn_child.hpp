#pragma once

// What runs in a freshly created child between its creation and execve, shared by every way
// of creating it (clone with CLONE_PIDFD in spawn_linux.cpp, vfork or fork in spawn.cpp).
//
// The child may share the parent's memory (CLONE_VM, vfork) and is created from a possibly
// multi-threaded process, so child_main() uses only async-signal-safe calls and never
// allocates: the parent prepares every string, array and fd number in a spawn_plan first.

#include <sys/resource.h>
#include <sys/types.h>

#include <cstddef>

#include "zreap_config.h"

namespace zreap::detail {

/// Where in the child a failure happened; sent to the parent with the errno.
enum class spawn_stage : int {
    dup2 = 1,
    setsid,
    setpgid,
    chdir,
    exec,
    parent_death_signal,
    setrlimit
};

/// The child's error report: 8 bytes written once, to the close-on-exec error pipe (fork,
/// vfork) or into the parent's memory (clone with CLONE_VM, spawn_plan::report). stage 0:
/// no failure.
struct spawn_failure {
    int stage;
    int err;
};

/// Everything the child needs, prepared by the parent; all pointers point into storage the
/// parent keeps alive until the child has exec'd or exited.
struct spawn_plan {
    const char* const* paths = nullptr;  ///< execve candidates, in PATH order
    std::size_t npaths = 0;
    char* const* argv = nullptr;
    char* const* envp = nullptr;
    const char* cwd = nullptr;  ///< nullptr: stay in the parent's working directory

    /// dup2(move_from[i], move_to[i]). Every move_from is >= err_at and every move_to below
    /// it, so no move overwrites the source of another.
    const int* move_from = nullptr;
    const int* move_to = nullptr;
    std::size_t nmoves = 0;
    /// Fds in [3, err_at) that are not a move target: closed in the child.
    const int* close_low = nullptr;
    std::size_t nclose_low = 0;
    /// One past the highest move target. After the moves, the child moves the error pipe
    /// here (close-on-exec) and closes every fd above it; without an error pipe, it closes
    /// every fd from err_at up.
    int err_at = 3;
    /// The error pipe's write end as the parent made it (>= err_at), or -1: the child shares
    /// the parent's memory and the parent is suspended until it has exec'd or exited
    /// (CLONE_VM | CLONE_VFORK), so it writes its report to *report instead.
    int err_fd = -1;
    spawn_failure* report = nullptr;
    int signal_limit = 65;  ///< one past the highest signal number to reset to SIG_DFL
    int close_limit = 0;    ///< without closefrom(): the child closes up to here (exclusive)

    enum class group_mode { inherit, new_group, new_session };
    group_mode group = group_mode::inherit;

    /// After the moves: dup2(1, 2), the child's stderr to wherever its stdout goes.
    bool stderr_to_stdout = false;
    /// prctl(PR_SET_PDEATHSIG) with this signal (Linux), 0 for none; parent_pid is the
    /// parent's pid, compared with getppid() afterwards to catch a parent that died first.
    int parent_death_signal = 0;
    pid_t parent_pid = 0;

    /// The loop raised the soft RLIMIT_NOFILE (loop_options::raise_fd_limit): the child gets
    /// nofile_soft back before it execs.
    bool restore_nofile = false;
    rlim_t nofile_soft = 0;
    rlim_t nofile_hard = 0;
};

/// Marks code that runs in the child before execve. The sanitizers' instrumentation assumes
/// the stack and thread it was set up for; on the child's own clone stack (or the parent's,
/// borrowed by vfork) ASan's noreturn hook misreads the stack bounds and reports a false
/// overflow. The child only makes system calls, so nothing is lost by not checking it.
#if defined(__GNUC__)
#define ZREAP_CHILD_CODE __attribute__((no_sanitize("address", "undefined")))
#else
#define ZREAP_CHILD_CODE
#endif

/// Runs in the child: resets dispositions and mask, arranges fds, group, cwd, then execs.
/// On failure writes a spawn_failure to the error pipe (or *plan.report if plan.err_fd is
/// -1) and _exits with 127.
[[noreturn]] ZREAP_CHILD_CODE void spawn_child_main(const spawn_plan& plan) noexcept;

#if ZREAP_HAVE_PDEATHSIG
/// Linux (spawn_linux.cpp), in the child: prctl(PR_SET_PDEATHSIG, @p sig), then checks that
/// the parent @p parent is still there (else it died before the call and the signal would
/// never come). Returns 0 or an errno (ESRCH: the parent is gone).
ZREAP_CHILD_CODE int set_parent_death_signal(int sig, pid_t parent) noexcept;
#endif

#if ZREAP_HAVE_CLONE_PIDFD
/// Linux (spawn_linux.cpp): creates the child with clone(CLONE_PIDFD | CLONE_VM |
/// CLONE_VFORK) on a stack of its own, so the pidfd names this very process from the
/// start. Returns the pid and sets *pidfd (close-on-exec), or returns -1 with errno.
/// Returns only after the child has exec'd or exited, so a failure report the child wrote
/// to *plan.report is there to read.
pid_t clone_with_pidfd(const spawn_plan& plan, int* pidfd) noexcept;

/// pidfd_send_signal(2); 0, or -1 with errno.
int send_signal_pidfd(int pidfd, int sig) noexcept;
#endif

}  // namespace zreap::detail
