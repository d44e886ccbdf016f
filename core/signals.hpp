#pragma once

// Signals owned by loops (loop::add_signal): one owner per signal in the process, as with
// SIGCHLD in core/sigchld_hub. The owner's handler records the signal and writes to the
// owning loop's wake channel, from whatever thread the kernel picked; the loop reads the
// record on its own thread. The disposition that was there before (the application's, or
// SIG_DFL) is put back when the loop gives the signal up.
//
// Why a handler and not a signalfd, even under the signalfd backend: a signalfd only sees a
// signal while it is pending, so the signal would have to be blocked in every thread of the
// program, and a thread that does not block SIGTERM would run its default action: the
// process would die. A handler works whichever thread takes the signal.

namespace zreap::detail {

/// Makes the calling loop (@p owner) the owner of @p signo: installs the handler, which
/// notes the signal and writes 8 bytes to @p wake_fd. Throws std::system_error: EINVAL for
/// SIGCHLD (watch children instead), SIGKILL and SIGSTOP (cannot be caught), the signals a
/// fault raises (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS: a handler that returns
/// would fault again) and numbers that are no signal; EBUSY if another loop owns it;
/// EEXIST if @p owner does.
void claim_signal(int signo, const void* owner, int wake_fd);

/// Gives @p signo back: restores the disposition found by claim_signal(). When it returns,
/// no handler uses the owner's wake fd any more.
void release_signal(int signo) noexcept;

/// True if @p signo arrived since the last call (standard signals that arrive together
/// count once, as the kernel coalesces them too); clears the record.
bool take_signal(int signo) noexcept;

}  // namespace zreap::detail
