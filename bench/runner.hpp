#pragma once

// One event loop under test, seen through the few things the benchmark scenarios need:
// watch a child, start an exec'd child, serve a zmq socket, fire a timer, run until a
// condition holds. Each zreap backend and each peer library (libuv, libev, GLib, sd-event)
// implements it with its own native calls, so every subject does the same job its own way.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace bench {

/// An exec'd child: argv[0] is a path; stdin/stdout are fds of the parent to hand over
/// (-1 = /dev/null).
struct spawn_request {
    std::vector<std::string> argv;
    int stdin_fd = -1;
    int stdout_fd = -1;
};

class runner {
  public:
    virtual ~runner() = default;

    /// False for libuv, which can only watch children that it started itself.
    virtual bool can_watch_foreign_pid() const { return true; }
    /// Calls @p on_exit from the loop once child @p pid has exited.
    virtual void watch(pid_t pid, std::function<void()> on_exit) = 0;
    /// Starts an exec'd child and calls @p on_exit from the loop when it exits. The default
    /// is posix_spawn() + watch(); libuv overrides it with uv_spawn().
    virtual pid_t spawn(const spawn_request& req, std::function<void()> on_exit);
    /// Calls @p serve whenever zmq socket @p socket may have a message; @p serve handles
    /// at most one and returns false when there was none.
    virtual void add_zmq_reader(void* socket, std::function<bool()> serve) = 0;
    /// Calls @p cb once, @p after from now.
    virtual void add_timer(std::chrono::milliseconds after, std::function<void()> cb) = 0;
    /// Runs the loop, one iteration at a time, until @p done() holds.
    virtual void run_until(const std::function<bool()>& done) = 0;
    /// The loop's own count of polls, or -1 if it keeps none.
    virtual std::int64_t polls() const { return -1; }
};

/// posix_spawn() with an empty signal mask and default SIGCHLD in the child.
pid_t posix_spawn_child(const spawn_request& req);

/// For the peers that see a zmq socket only through its ZMQ_FD: the fd to watch. Throws
/// std::system_error if libzmq will not give it.
int zmq_fd(void* socket);

/// For the same peers: ZMQ_FD is edge-triggered, so serve until ZMQ_EVENTS no longer says
/// readable.
void drain_zmq(void* socket, const std::function<bool()>& serve);

/// Subject names: "zreap:<backend>", "libuv", "libev", "glib", "sd-event". Throws
/// std::runtime_error if the subject cannot run here.
std::unique_ptr<runner> make_runner(const std::string& subject);

/// The peers compiled into this benchmark, in display order.
std::vector<std::string> compiled_peers();

/// True if the subject must have SIGCHLD blocked in every thread before it starts
/// (sd-event; zreap backends that say capabilities::needs_sigchld_blocked).
bool needs_sigchld_blocked(const std::string& subject);

// One factory per peer, each defined in its own source when that library was found.
std::unique_ptr<runner> make_zreap_runner(const std::string& backend_name);
std::unique_ptr<runner> make_libuv_runner();
std::unique_ptr<runner> make_libev_runner();
std::unique_ptr<runner> make_glib_runner();
std::unique_ptr<runner> make_sdevent_runner();

/// CLOCK_MONOTONIC in nanoseconds: the clock the exiting children stamp with.
std::int64_t now_ns() noexcept;

}  // namespace bench
