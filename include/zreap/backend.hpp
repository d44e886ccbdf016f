#pragma once

/// @file
/// Child-exit backends: names, what each can promise, and which one a loop uses.

#include <chrono>
#include <optional>
#include <string_view>
#include <system_error>  // what default_backend() throws
#include <vector>

#include <zreap/export.hpp>

namespace zreap {

/// How a loop learns that a child exited. Each value is also a meson option, a folder
/// under backends/ and a ZREAP_BACKEND value, spelled as to_string() returns it.
enum class backend {
    pidfd,      ///< one pidfd per child, all in one epoll fd (Linux >= 5.4)
    signalfd,   ///< SIGCHLD blocked in every thread and read from a signalfd (Linux)
    selfpipe,   ///< SIGCHLD handler writes to a pipe in the poll set (POSIX)
    sigaction,  ///< SIGCHLD handler interrupts zmq_poll with EINTR (POSIX; bounded lost wakeups)
    libev,      ///< libev's ev_child on its default loop, fed into zmq_poll
    io_uring,   ///< one IORING_OP_WAITID per child on one io_uring, no fd per child (Linux >= 6.7)
};

/// What a backend can and cannot promise. The contract tests ask these instead of
/// special-casing backends by name, and so can applications.
struct capabilities {
    /// Every exit wakes the loop at once. False only for sigaction, where an exit that
    /// lands between the flag check and zmq_poll is noticed after at most the loop's
    /// wakeup cap (see loop_options::wakeup_cap).
    bool race_free = true;
    /// The backend reaps children it was not asked to watch, so waitpid() by other code
    /// in the process fails with ECHILD (libev).
    bool reaps_foreign_children = false;
    /// Several loops, in several threads, may use this backend at the same time.
    bool multiple_loops = true;
    /// SIGCHLD must be blocked in every thread of the process before the loop is made;
    /// the backend blocks it in the constructing thread and refuses if another thread
    /// leaves it unblocked.
    bool needs_sigchld_blocked = false;
    /// The backend installs a process-wide SIGCHLD handler while a loop using it lives.
    bool installs_signal_handler = false;
    /// Exit statuses carry the child's resource usage (exit_status::has_usage). False for
    /// libev, which reaps with waitpid(), and where the C library lacks wait4.
    bool reports_usage = true;
};

/// "pidfd", "signalfd", "selfpipe", "sigaction", "libev" or "io_uring".
ZREAP_API std::string_view to_string(backend b) noexcept;

/// The backend named @p name, or nullopt if there is no such backend.
ZREAP_API std::optional<backend> backend_from_string(std::string_view name) noexcept;

/// Every backend compiled into this library, in the library's order of preference: pidfd,
/// selfpipe, sigaction, then io_uring (slower with many children), then signalfd and libev,
/// which need the program's cooperation.
ZREAP_API std::vector<backend> compiled_backends();

/// True if @p b is compiled in and works in this process now: its system calls are there
/// and not blocked (pidfd or io_uring under seccomp, an old kernel, io_uring disabled by
/// the kernel.io_uring_disabled sysctl) and the process's SIGCHLD
/// disposition lets it work (not SIG_IGN, no SA_NOCLDWAIT for the signal-driven ones).
ZREAP_API bool backend_usable(backend b) noexcept;

/// What @p b promises. Defined for every backend, compiled in or not.
ZREAP_API capabilities backend_capabilities(backend b) noexcept;

/// The backend zreap::loop{} uses: ZREAP_BACKEND from the environment if set, else the
/// build-time -Ddefault_backend choice; "auto" takes the first usable backend of
/// compiled_backends(), so a build without pidfd, selfpipe and sigaction takes signalfd or
/// libev. Throws std::system_error if the named backend is unknown, not compiled in or not
/// usable here (for "auto": if none compiled in is usable; the message lists them): it
/// never falls back silently from an explicit choice.
ZREAP_API backend default_backend();

}  // namespace zreap
