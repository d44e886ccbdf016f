#pragma once

/// @file
/// Starting a child process that the loop watches: argv without a shell, environment,
/// working directory, stdio as inherit / null / pipe / a given fd, process group or session.

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <stdexcept>  // std::logic_error, from kill() and terminate() once the loop is gone
#include <string>
#include <utility>
#include <vector>

#include <zreap/exit_status.hpp>
#include <zreap/export.hpp>
#include <zreap/loop.hpp>

namespace zreap {

/// What one of the child's stdin, stdout or stderr is connected to.
struct stdio {
    /// The possible connections; the static members below name each one.
    enum class kind { inherit, null, pipe, fd };
    /// This stream's connection.
    kind how = kind::inherit;
    int fd = -1;  ///< for kind::fd: the parent's fd, dup'ed onto the child's; the caller keeps it

    static const stdio inherit;  ///< the parent's own
    static const stdio null;     ///< /dev/null
    static const stdio pipe;     ///< a pipe; the parent's end is child::stdin_fd() etc.
    /// The given fd of the parent (a file, a socket, another child's pipe).
    static stdio use_fd(int fd) noexcept { return stdio{kind::fd, fd}; }
};
inline const stdio stdio::inherit{stdio::kind::inherit, -1};
inline const stdio stdio::null{stdio::kind::null, -1};
inline const stdio stdio::pipe{stdio::kind::pipe, -1};

/// How to start the child.
struct spawn_options {
    /// Program and arguments, executed without a shell. argv[0] without a slash is looked up
    /// in PATH (the child's PATH when the environment is replaced or extended with one).
    std::vector<std::string> argv;

    /// Where the child's environment comes from.
    enum class env_mode {
        inherit,  ///< the parent's environment, unchanged
        replace,  ///< exactly `env`
        extend,   ///< the parent's, with `env` added (an entry replaces one of the same name)
    };
    /// How `env` is used.
    env_mode env_how = env_mode::inherit;
    /// "NAME=value" entries for replace and extend. Entries given with env_how left at
    /// inherit are an error (EINVAL), never silently ignored.
    std::vector<std::string> env;

    std::string cwd;  ///< working directory; empty = the parent's

    stdio stdin_mode = stdio::inherit;   ///< the child's stdin
    stdio stdout_mode = stdio::inherit;  ///< the child's stdout
    stdio stderr_mode = stdio::inherit;  ///< the child's stderr
    /// The child's stderr goes where its stdout goes (2>&1), whatever stdout_mode is; with
    /// stdout_mode = stdio::pipe both arrive, interleaved as written, on child::stdout_fd()
    /// and are delivered before the exit callback. stderr_mode must then stay inherit.
    bool stderr_to_stdout = false;

    /// Further fds to pass on: {parent fd, fd number in the child}. Nothing else of the
    /// parent's is inherited, whatever its close-on-exec flag.
    std::vector<std::pair<int, int>> pass_fds;

    /// Which process group and session the child joins.
    enum class group_mode {
        inherit,      ///< the parent's process group and session
        new_group,    ///< setpgid(0, 0): its own process group (signal it with -pid)
        new_session,  ///< setsid(): its own session and process group
    };
    /// The child's process group and session. A child in a group of its own can be
    /// signalled as a whole: child::kill_group(), and terminate() then ends the group.
    group_mode group = group_mode::inherit;

    /// Linux only: the signal the child gets when the thread that called spawn() ends
    /// (prctl PR_SET_PDEATHSIG), most often because the process died, killed with SIGKILL
    /// or otherwise; 0 = none. The kernel ties it to the creating thread, not the process:
    /// spawn from the thread that runs the loop. If the parent is already gone when the
    /// child sets it up, the child exits before exec. Only the child itself gets it, not
    /// the processes it starts (end those through its process group). Elsewhere spawn
    /// throws ENOTSUP when it is set.
    int parent_death_signal = 0;
};

/// A child started by spawn(). Movable, not copyable. Destroying it closes the parent's
/// pipe ends that the caller has not taken, and nothing else: the loop still reports the
/// exit to the callback given to spawn().
class child {
  public:
    ZREAP_API child() noexcept;
    ZREAP_API ~child();
    /// Moves the handle; the moved-from child is empty.
    ZREAP_API child(child&&) noexcept;
    /// Drops this handle (as the destructor does) and takes over another's.
    ZREAP_API child& operator=(child&&) noexcept;
    child(const child&) = delete;
    child& operator=(const child&) = delete;

    /// The child's process id.
    ZREAP_API pid_t pid() const noexcept;
    /// The pidfd obtained atomically when the child was created (pidfd backend), or -1.
    /// Owned by zreap: valid at least while the child object lives; do not close it. The
    /// loop watches the child through this same fd (one fd per spawned child). It is closed
    /// once both the child object and the loop's use of it (the exit callback, a pending
    /// terminate()) are gone.
    ZREAP_API int pidfd() const noexcept;
    /// The parent's end of a stdio::pipe (non-blocking, close-on-exec, ready for
    /// loop::add_fd), or -1. Owned by the child object until release_*() is called.
    ZREAP_API int stdin_fd() const noexcept;
    /// The parent's end of the stdout pipe, as stdin_fd().
    ZREAP_API int stdout_fd() const noexcept;
    /// The parent's end of the stderr pipe, as stdin_fd().
    ZREAP_API int stderr_fd() const noexcept;
    /// Takes ownership of a pipe end away from the child object.
    ZREAP_API int release_stdin() noexcept;
    /// As release_stdin(), for stdout.
    ZREAP_API int release_stdout() noexcept;
    /// As release_stdin(), for stderr.
    ZREAP_API int release_stderr() noexcept;
    /// Closes the parent's end of the stdin pipe (the child reads EOF).
    ZREAP_API void close_stdin() noexcept;

    /// The loop source watching this child (for loop::remove).
    ZREAP_API source_id source() const noexcept;
    /// True from the moment the loop has reaped the child, which can be before its exit
    /// callback runs (the callback waits for the child's last output, see
    /// watch_options::drain_first). From then on the pid may belong to another process, and
    /// kill(), kill_group() and terminate() send nothing. Also true for a child that the
    /// loop's destructor killed and reaped.
    ZREAP_API bool reaped() const noexcept;
    /// True if the child leads a process group of its own (spawned with
    /// group_mode::new_group or new_session), which kill_group() and terminate() signal.
    ZREAP_API bool leads_group() const noexcept;

    /// Sends @p sig, through pidfd_send_signal where there is a pidfd. Never reaches a
    /// recycled pid: throws std::system_error (ESRCH) once the child has been reaped, and
    /// std::logic_error once its loop is gone or its source was removed with
    /// loop::remove() (nothing tracks the pid any more: other code may reap it).
    ZREAP_API void kill(int sig);
    /// Sends @p sig to the child's whole process group (kill(-pid)); the child must lead one
    /// (leads_group(), else EINVAL). While the child is unreaped its pid, and so its group
    /// id, cannot be reused, so the signal reaches only the group it started. Throws like
    /// kill(): ESRCH once the child has been reaped, std::logic_error once its loop is gone
    /// or its source removed.
    /// Processes of the group that outlive the child can be signalled only until then.
    ZREAP_API void kill_group(int sig);
    /// SIGTERM now, then SIGKILL if the child has not exited after @p grace, driven by the
    /// loop's timers; never blocks. A child that leads its own process group gets both
    /// signals as a group. Does nothing once the child has been reaped; the SIGKILL timer is
    /// removed at that moment (not when the exit callback runs), so it never fires at a pid
    /// that may have been recycled. A second call restarts the grace period. The SIGKILL
    /// still comes if the child object is destroyed meanwhile, and goes if the child's
    /// source is removed (loop::remove()). Throws std::logic_error if the loop is gone or
    /// the source removed.
    ZREAP_API void terminate(std::chrono::milliseconds grace);

    struct state;

  private:
    explicit child(std::shared_ptr<state> s) noexcept;
    std::shared_ptr<state> s_;
    friend child spawn(loop&, const spawn_options&, std::function<void(const exit_status&)>);
};

/// Starts a child as @p options says and watches it on @p lp; @p on_exit runs once when it
/// exits. Race-free with respect to pid reuse: with the pidfd backend the pidfd comes from
/// clone(CLONE_PIDFD) itself. The child starts with an empty signal mask, default signal
/// dispositions and no fd of the parent but its stdio and @p options.pass_fds.
///
/// Throws std::system_error: the exec error (ENOENT, EACCES, ENOEXEC, ...) for a program
/// that cannot be run, EAGAIN when the process limit is reached, EMFILE, EINVAL for
/// contradictory options, and the like; nothing is left behind when it throws.
///
/// The result should be kept: dropping it closes the parent's pipe ends at once (the child
/// is still watched and @p on_exit still runs).
[[nodiscard]] ZREAP_API child spawn(loop& lp, const spawn_options& options,
                                    std::function<void(const exit_status&)> on_exit);

}  // namespace zreap
