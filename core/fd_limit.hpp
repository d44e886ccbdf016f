#pragma once

// RLIMIT_NOFILE, raised when a loop runs out of descriptors. Login shells and systemd
// services start with a soft limit of 1024 (for select(), whose fd_set holds no more) and a
// far higher hard limit (systemd: 524288); a process may raise its own soft limit up to the
// hard one. The pidfd backend needs one fd per watched child, so at 1024 it stops near
// 1,000 children. On EMFILE the loop raises the soft limit to the hard one, once, and tries
// again (loop_options::raise_fd_limit), as Go's runtime does at start-up; zreap::spawn gives
// its children the soft limit the process had before, so that a select() program it starts
// is not surprised. A program that uses select() itself would only have had EMFILE where it
// now gets an fd above 1023.

#include <sys/resource.h>

#include <cerrno>
#include <system_error>

namespace zreap::detail {

/// Raises the soft RLIMIT_NOFILE to the hard limit. True if the soft limit is higher now
/// than before the call (by this call or another thread's); false if it was at the hard
/// limit already or setrlimit failed. Thread-safe.
bool raise_fd_limit() noexcept;

/// The soft RLIMIT_NOFILE this process had before raise_fd_limit() first raised it; false if
/// it never did.
bool fd_limit_before_raise(rlim_t& soft) noexcept;

/// Runs @p attempt, which must leave nothing behind when it throws; if it throws EMFILE and
/// @p allowed (loop_options::raise_fd_limit), raises the soft limit and runs it once more.
template <typename F>
auto retry_after_raising_fd_limit(bool allowed, F&& attempt) -> decltype(attempt()) {
    try {
        return attempt();
    } catch (const std::system_error& e) {
        if (!allowed || e.code().value() != EMFILE || !raise_fd_limit())
            throw;
    }
    return attempt();
}

}  // namespace zreap::detail
