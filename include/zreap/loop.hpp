#pragma once

/// @file
/// One event loop on top of zmq_poll(): zmq sockets, plain fds, timers and child exits.

#include <sys/types.h>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>     // std::logic_error, from run() in a callback and the like
#include <system_error>  // std::system_error, what every call that the system can refuse throws
#include <type_traits>
#include <utility>
#include <vector>

#include <zmq.h>

#include <zreap/backend.hpp>
#include <zreap/exit_status.hpp>
#include <zreap/export.hpp>

namespace zreap {

namespace detail {
struct loop_access;
}

/// Identifies a source registered with a loop; never reused within one loop. 0 is never
/// a valid id.
using source_id = std::uint64_t;

/// What a loop's destructor does with the children it still watches that have not exited
/// yet. Children that have exited already are reaped in every case, so none is left a
/// zombie; no exit callback runs during destruction.
enum class destroy_policy {
    /// Children started by zreap::spawn on this loop are killed (SIGKILL, to their process
    /// group as well when they lead one) and reaped, so none outlives its loop unseen and no
    /// terminate() is left half done; children given to watch_child are released, as with
    /// release. The default.
    kill_spawned,
    /// Every child still watched is killed with SIGKILL and reaped.
    kill_all,
    /// No child is killed: the running ones are left to the program, which must wait for
    /// them (waitpid), or they stay zombies once they exit. A pending terminate() SIGKILL
    /// never comes.
    release,
};

/// Everything a loop can be tuned with. The defaults suit almost everyone.
struct loop_options {
    /// Backend to use; unset = default_backend().
    std::optional<zreap::backend> which;
    /// Longest single zmq_poll wait for backends that can lose a wakeup (sigaction): an exit
    /// whose signal slipped in just before zmq_poll is noticed after at most this long.
    /// Ignored by the race-free backends, which never wake up on a timer of their own.
    std::chrono::milliseconds wakeup_cap{50};
    /// At most this many child exits are reaped and dispatched per loop iteration, so that
    /// an exit storm never starves sockets and fds (they are polled between batches).
    std::size_t max_exits_per_iteration = 64;
    /// What the destructor does with children still running (see destroy_policy). The
    /// destructor waits for the children it kills for at most a few seconds in all (a child
    /// held by a tracer cannot be reaped before the tracer lets go); any left then are
    /// released.
    destroy_policy children_at_destroy = destroy_policy::kill_spawned;
    /// When watching or spawning a child fails with EMFILE (the pidfd backend needs one fd
    /// per child: about 1,000 children under the usual soft RLIMIT_NOFILE of 1024), raise the
    /// process's soft RLIMIT_NOFILE to its hard limit, once, and try again, as Go's runtime
    /// does at start-up. zreap::spawn gives its children the soft limit the process had
    /// before. False: EMFILE is thrown as it is. A program that uses select() gets fds
    /// above 1023 where it would have had EMFILE; one that must keep the limit says false.
    bool raise_fd_limit = true;
};

/// Counters a loop keeps about itself; tests and benchmarks read them.
struct loop_stats {
    std::uint64_t polls = 0;         ///< zmq_poll calls
    std::uint64_t idle_wakeups = 0;  ///< zmq_poll returns that dispatched nothing
    std::uint64_t interrupted = 0;   ///< zmq_poll returns with EINTR
    std::uint64_t exits = 0;         ///< child exits reaped by this loop
    /// Wakeups where the backend found exits that had not woken the poll (sigaction's
    /// lost-wakeup race, recovered by the wakeup cap). Always 0 for race-free backends.
    std::uint64_t lost_wakeups = 0;
    std::uint64_t posted = 0;   ///< functions run for post()
    std::uint64_t signals = 0;  ///< signal callbacks run for add_signal()
    /// SIGCHLDs that reached a thread not blocking SIGCHLD and were turned into a wakeup of
    /// the loop by zreap's handler. Only the signalfd backend counts them: its signalfd
    /// never sees such a signal, which its SIGCHLD handler rescues (see
    /// docs/backends/signalfd.md). Always 0 for the other backends.
    std::uint64_t rescued_signals = 0;
};

/// Options for one watched child.
struct watch_options {
    /// A pidfd for the child that the caller already holds (from clone(CLONE_PIDFD) or
    /// pidfd_open), or -1. The loop duplicates it and the caller keeps its own. The pidfd
    /// backend then needs no pidfd_open, which closes the pid-reuse window.
    int pidfd = -1;
    /// Fds (pipes from the child) whose buffered data must be delivered before the exit
    /// callback runs. When the loop reaps the child, it notes how many bytes each of them
    /// holds; the exit callback then waits while an fd still refers to the same pipe, is
    /// polled for ZMQ_POLLIN by a source of this loop and has unread bytes, until its
    /// callbacks have read that many bytes (counted from FIONREAD before and after each
    /// callback, and at least one byte per callback, so bytes that other processes keep
    /// writing, a grandchild's, cannot hold the exit back forever). An fd that was closed
    /// and whose number now names another file is not waited for.
    std::vector<int> drain_first;
};

/// A single-threaded event loop on zmq_poll(). Create, use and destroy a loop on one
/// thread; several loops may live in several threads where the backend allows it
/// (capabilities::multiple_loops). From other threads only post() and request_stop() may be
/// called (request_stop() also from a signal handler).
///
/// Callbacks may add and remove sources (themselves included), watch or spawn children
/// and call stop(). A source removed during a dispatch is never called again, not even
/// later in the same dispatch. An exception thrown by a callback propagates out of run()
/// or run_once(); the loop stays usable and no reaped exit is lost. A callback may not run
/// the loop that called it: run() and run_once() then throw std::logic_error. A callback
/// may destroy its own loop; no other callback of that dispatch runs after it, and the
/// loop's state goes when the dispatch ends. A callback that throws leaves pending signals
/// and a request_stop() for the next iteration, not lost.
///
/// Moving a loop moves a handle: children spawned on it, their terminate() timers and
/// every source follow it.
class loop {
  public:
    /// Uses default_backend(). Throws std::system_error (see below).
    ZREAP_API loop();
    /// Uses @p b. Throws std::system_error if @p b is not compiled in or not usable here,
    /// or the backend cannot start (SIGCHLD ignored, another thread leaves SIGCHLD
    /// unblocked for signalfd, a second libev loop, EMFILE, ...).
    ZREAP_API explicit loop(backend b);
    /// Uses @p options (which backend, wakeup cap, exit batch size). Throws as above.
    ZREAP_API explicit loop(const loop_options& options);
    /// Releases the backend and restores the process state it changed. Children still
    /// watched that already exited are reaped; running ones are killed and reaped, or left
    /// to the program, as loop_options::children_at_destroy says (default: the ones started
    /// by zreap::spawn are killed, the others left).
    ZREAP_API ~loop();
    /// Moves the loop; the moved-from loop may only be destroyed or assigned to.
    ZREAP_API loop(loop&&) noexcept;
    /// Destroys this loop's state (as ~loop does) and takes over @p other's.
    ZREAP_API loop& operator=(loop&& other) noexcept;
    loop(const loop&) = delete;
    loop& operator=(const loop&) = delete;

    /// The backend this loop uses.
    ZREAP_API backend which() const noexcept;
    /// What that backend promises.
    ZREAP_API capabilities caps() const noexcept;

    /// Calls @p cb with zmq revents (ZMQ_POLLIN/ZMQ_POLLOUT) when the zmq socket is ready
    /// for @p events. Readiness is level-triggered: @p cb runs again while it stays ready.
    ZREAP_API source_id add_socket(void* zmq_socket, short events, std::function<void(short)> cb);
    /// Same, for a C++ socket object with a handle() that returns the libzmq socket, such
    /// as cppzmq's zmq::socket_t and zmq::socket_ref. zreap does not depend on cppzmq: any
    /// such type is accepted, and no cppzmq header is needed to build zreap. The loop keeps
    /// only the libzmq handle: remove the source before the socket is closed.
    template <typename Socket, typename = std::enable_if_t<std::is_same_v<
                                   decltype(std::declval<Socket&>().handle()), void*>>>
    source_id add_socket(Socket&& socket, short events, std::function<void(short)> cb) {
        return add_socket(static_cast<void*>(socket.handle()), events, std::move(cb));
    }
    /// Calls @p cb with zmq revents when @p fd is ready for @p events (ZMQ_POLLIN,
    /// ZMQ_POLLOUT). Hang-up and errors arrive as ZMQ_POLLERR. The loop does not own @p fd.
    ZREAP_API source_id add_fd(int fd, short events, std::function<void(short)> cb);
    /// Calls @p cb after @p first, then every @p every (0 = once). Monotonic clock.
    ZREAP_API source_id add_timer(std::chrono::milliseconds first, std::chrono::milliseconds every,
                                  std::function<void()> cb);
    /// Calls @p cb on the loop's thread after signal @p signo arrived (SIGTERM, SIGINT,
    /// SIGHUP, SIGUSR1, ...), whichever thread the kernel delivered it to; signals that
    /// arrive together are reported once, as the kernel coalesces them. The loop owns the
    /// signal while the source lives: its handler replaces the disposition there was (the
    /// application's handler, SIG_DFL or SIG_IGN), which comes back when the source is
    /// removed or the loop destroyed. Throws std::system_error: EINVAL for SIGCHLD (use
    /// watch_child), SIGKILL, SIGSTOP, the fault signals (SIGSEGV, SIGBUS, SIGFPE, SIGILL,
    /// SIGTRAP, SIGSYS) and non-signals; EBUSY if another loop in the process owns
    /// @p signo; EEXIST if this one does.
    ZREAP_API source_id add_signal(int signo, std::function<void(int signo)> cb);

    /// Changes the events an fd or socket source waits for (ZMQ_POLLIN, ZMQ_POLLOUT), in
    /// place: toggling ZMQ_POLLOUT while output is queued needs no remove and add. Throws
    /// std::system_error: ENOENT for an unknown id, EINVAL for a source that is no fd or
    /// socket.
    ZREAP_API void modify(source_id id, short events);

    /// Runs @p fn once on the loop's thread, in the order of the post() calls, during a
    /// later iteration; wakes a sleeping loop. Callable from any thread (the loop object
    /// must outlive the call and must not be moved meanwhile). An exception thrown by @p fn
    /// leaves run()/run_once() like any callback's; the functions posted after it still run,
    /// on the next iteration.
    ZREAP_API void post(std::function<void()> fn);
    /// Calls @p cb once, when child @p pid exits, after reaping it. Throws
    /// std::system_error: ECHILD if @p pid is not an unreaped child of this process,
    /// EEXIST if a zreap loop in this process already watches it, EMFILE and the like from
    /// the backend. A child that exited before this call is reported promptly.
    ZREAP_API source_id watch_child(pid_t pid, std::function<void(const exit_status&)> cb,
                                    const watch_options& options = {});
    /// Removes a source. For a child, its exit will not be reported. A child still running
    /// when it is removed is not reaped by zreap, so other code may waitpid() it (a spawned
    /// child's handle then refuses to signal it, and its pending terminate() goes); one whose
    /// exit the loop has already reaped in the current batch (its callback was queued behind
    /// the one that removes it) is gone, and its status with it. Unknown ids are ignored,
    /// so removing twice is harmless.
    ZREAP_API void remove(source_id id) noexcept;
    /// True while @p id is registered.
    ZREAP_API bool contains(source_id id) const noexcept;
    /// Number of registered sources of every kind.
    ZREAP_API std::size_t size() const noexcept;

    /// Polls and dispatches until stop() is called or no source is left. Throws
    /// std::logic_error if called from a callback of this loop.
    ZREAP_API void run();
    /// Waits until at least one callback has run, or @p timeout has passed (negative = no
    /// limit), or stop() was called, dispatching whatever is ready on each wakeup; returns
    /// how many callbacks ran (0 on timeout). A wakeup that runs no callback (EINTR, a
    /// reaped exit still held back behind its output) does not end the call. Throws
    /// std::logic_error if called from a callback of this loop.
    ZREAP_API int run_once(std::chrono::milliseconds timeout);
    /// Makes run() return after the current dispatch. Call it on the loop's thread
    /// (typically from a callback).
    ZREAP_API void stop() noexcept;
    /// As stop(), from any thread or from a signal handler: async-signal-safe (an atomic
    /// store and one write). The loop wakes up and run() returns after that iteration; a
    /// request made before run() is called stops that run at its first iteration.
    ZREAP_API void request_stop() noexcept;

    /// Embedding the loop in another event loop (a plain zmq_poll loop, GLib, ...), instead
    /// of run(). Each round of the host loop:
    ///
    ///     std::size_t mine = items.size();      // the host's own items come first
    ///     int t = lp.prepare(items);             // appends the loop's items
    ///     zmq_poll(items.data(), items.size(), min(host timeout, t));   // any outcome
    ///     lp.dispatch(items.data() + mine, items.size() - mine);
    ///
    /// prepare() appends the items the loop needs polled (its backend's fds, its own
    /// sources, its wake channel), each with revents 0, and returns the longest the host may
    /// wait before calling dispatch() (-1 = no limit; 0 when work is already waiting). The
    /// set can change from one round to the next. Throws std::logic_error from a callback of
    /// this loop.
    ZREAP_API int prepare(std::vector<zmq_pollitem_t>& items);
    /// Reaps and dispatches after the host's poll; @p items are those prepare() appended, in
    /// the same order, with the revents the poll filled in (all 0 after a timeout or EINTR).
    /// Call it once after every prepare(). Returns how many callbacks ran. Throws
    /// std::logic_error if @p n is not what prepare() appended, or from a callback of this
    /// loop.
    ZREAP_API int dispatch(const zmq_pollitem_t* items, std::size_t n);

    /// Counters about this loop.
    ZREAP_API loop_stats stats() const noexcept;

    struct impl;

  private:
    // Shared so that a child spawned on the loop can hold a weak reference that survives
    // a move of the loop and tells it when the loop is gone.
    std::shared_ptr<impl> impl_;
    friend struct detail::loop_access;
};

}  // namespace zreap
