#pragma once

/// @file
/// Starting a child process that the loop watches: argv without a shell, environment,
/// working directory, stdio as inherit / null / pipe / a given fd, process group or session.

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <zreap/exit_status.hpp>
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
    std::vector<std::string> env;  ///< "NAME=value" entries for replace and extend

    std::string cwd;  ///< working directory; empty = the parent's

    stdio stdin_mode = stdio::inherit;   ///< the child's stdin
    stdio stdout_mode = stdio::inherit;  ///< the child's stdout
    stdio stderr_mode = stdio::inherit;  ///< the child's stderr

    /// Further fds to pass on: {parent fd, fd number in the child}. Nothing else of the
    /// parent's is inherited, whatever its close-on-exec flag.
    std::vector<std::pair<int, int>> pass_fds;

    /// Which process group and session the child joins.
    enum class group_mode {
        inherit,      ///< the parent's process group and session
        new_group,    ///< setpgid(0, 0): its own process group (signal it with -pid)
        new_session,  ///< setsid(): its own session and process group
    };
    /// The child's process group and session.
    group_mode group = group_mode::inherit;
};

/// A child started by spawn(). Movable, not copyable. Destroying it closes the parent's
/// pipe ends that the caller has not taken, and nothing else: the loop still reports the
/// exit to the callback given to spawn().
class child {
  public:
    child() noexcept;
    ~child();
    /// Moves the handle; the moved-from child is empty.
    child(child&&) noexcept;
    /// Drops this handle (as the destructor does) and takes over another's.
    child& operator=(child&&) noexcept;
    child(const child&) = delete;
    child& operator=(const child&) = delete;

    /// The child's process id.
    pid_t pid() const noexcept;
    /// The pidfd obtained atomically when the child was created (pidfd backend), or -1.
    /// Owned by zreap: valid at least while the child object lives; do not close it. (It is
    /// closed once both the child object and the loop's use of it, the exit callback and a
    /// pending terminate(), are gone.)
    int pidfd() const noexcept;
    /// The parent's end of a stdio::pipe (non-blocking, close-on-exec, ready for
    /// loop::add_fd), or -1. Owned by the child object until release_*() is called.
    int stdin_fd() const noexcept;
    /// The parent's end of the stdout pipe, as stdin_fd().
    int stdout_fd() const noexcept;
    /// The parent's end of the stderr pipe, as stdin_fd().
    int stderr_fd() const noexcept;
    /// Takes ownership of a pipe end away from the child object.
    int release_stdin() noexcept;
    /// As release_stdin(), for stdout.
    int release_stdout() noexcept;
    /// As release_stdin(), for stderr.
    int release_stderr() noexcept;
    /// Closes the parent's end of the stdin pipe (the child reads EOF).
    void close_stdin() noexcept;

    /// The loop source watching this child (for loop::remove).
    source_id source() const noexcept;
    /// True once the loop has reaped the child (its exit callback is running or has run).
    bool reaped() const noexcept;

    /// Sends @p sig, through pidfd_send_signal where there is a pidfd, so it can never hit
    /// a recycled pid. Throws std::system_error (ESRCH) once the child has been reaped.
    void kill(int sig);
    /// SIGTERM now, then SIGKILL if the child has not exited after @p grace, driven by the
    /// loop's timers; never blocks. Does nothing once the child has been reaped. The timer
    /// is removed when the child exits; a second call restarts the grace period. The SIGKILL
    /// still comes if the child object is destroyed meanwhile. Needs the loop alive.
    void terminate(std::chrono::milliseconds grace);

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
/// that cannot be run, EAGAIN when the process limit is reached, EMFILE, and the like;
/// nothing is left behind when it throws.
child spawn(loop& lp, const spawn_options& options,
            std::function<void(const exit_status&)> on_exit);

}  // namespace zreap
