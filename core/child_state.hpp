#pragma once

// What a zreap::child handle and the loop that watches the child share. The loop marks the
// state reaped the moment it reaps the child, before the exit callback (which may wait for
// the child's last output), and removes a pending terminate() timer then: from that moment
// the pid may be another process's, and nothing may be sent to it.

#include <sys/types.h>

#include <memory>

#include <zreap/spawn.hpp>

#include "unique_fd.hpp"

namespace zreap {

struct child::state {
    /// The loop watching the child. Weak: the loop may move (the handle stays valid) or be
    /// destroyed first (lock() then fails, and the child can no longer be signalled safely).
    std::weak_ptr<loop::impl> lp;
    pid_t pid = -1;
    /// From clone(CLONE_PIDFD), or none. The loop's pidfd watcher borrows this very fd.
    detail::unique_fd pidfd;
    detail::unique_fd in, out, err;
    source_id src = 0;
    source_id term_timer = 0;
    bool reaped = false;
    /// Removed from its loop (loop::remove) before it was reaped: other code may reap it
    /// now, and its pid may then be recycled without the loop knowing, so nothing may be
    /// sent to it any more.
    bool released = false;
    bool leads_group = false;  // spawned with a new process group or session: pgid == pid

    /// Sends @p sig to the process (@p group false) or its process group; throws
    /// std::system_error (ESRCH once reaped) or std::logic_error (loop gone, or the child
    /// removed from it). @p what names
    /// the public call in the messages.
    void send(int sig, bool group, const char* what);
    /// The same without the checks and without throwing: for the loop, which knows that
    /// the child is unreaped. Returns 0 or an errno.
    int send_unchecked(int sig, bool group) noexcept;
};

}  // namespace zreap
