#pragma once

// One process-wide SIGCHLD handler shared by every loop of the signal-handler backends
// (selfpipe, sigaction, libev). A handler is a process-wide resource: if each loop installed its
// own, the second would overwrite the first and the first loop's destruction would restore
// a disposition that the second still needs. The hub installs the handler when the first
// subscriber arrives, restores exactly what it found when the last one leaves, and fans
// each signal out to every subscriber:
//
//   - a pipe subscriber gets the exited child's pid (si_pid, 0 if unknown) written to its
//     pipe, as one atomic sizeof(pid_t) write; a full pipe is already readable, so EAGAIN
//     is ignored and only the hint is lost;
//   - a flag subscriber gets its flag set, and when the signal was raised by the kernel on
//     a thread other than the subscriber's, the signal is forwarded there with
//     pthread_kill so that the subscriber's zmq_poll returns EINTR.
//
// A handler that was installed before the hub (the application's own) keeps being called
// after the fan-out, and is put back when the last subscriber leaves.

#include <pthread.h>

#include <atomic>

namespace zreap::detail {

/// Subscribes a non-blocking pipe write end; returns a slot for unsubscribe(). Throws
/// std::system_error if SIGCHLD is ignored or the slots are exhausted.
int sigchld_subscribe_pipe(int write_fd, const char* who);

/// Subscribes a flag that the handler sets to 1, and the thread that should be interrupted.
int sigchld_subscribe_flag(std::atomic<int>* flag, pthread_t thread, const char* who);

/// Changes the thread a flag subscriber's signal is forwarded to.
void sigchld_set_thread(int slot, pthread_t thread) noexcept;

/// Reserves SIGCHLD for a loop that blocks it in every thread and reads it from a signalfd
/// (the signalfd backend). A blocked SIGCHLD never reaches the hub's handler, and of two
/// signalfds for it whichever is read first consumes the signal, so while the reservation
/// is held there may be no subscriber and no second reservation, and subscribing fails.
/// Throws std::system_error (EBUSY) naming @p who if that cannot be had.
void sigchld_reserve_for_signalfd(const char* who);

/// Gives up the reservation made by sigchld_reserve_for_signalfd().
void sigchld_release_signalfd() noexcept;

/// Ends a subscription. When it returns, the handler no longer uses the slot's fd or flag,
/// so the caller may close or free them.
void sigchld_unsubscribe(int slot) noexcept;

}  // namespace zreap::detail
