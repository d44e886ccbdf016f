// The zreap subject (one per compiled backend) and what all subjects share.

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include <zreap/zreap.hpp>

#include "bench_config.h"
#include "runner.hpp"

extern char** environ;

namespace bench {

std::int64_t now_ns() noexcept {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

pid_t posix_spawn_child(const spawn_request& req) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    ::posix_spawn_file_actions_init(&fa);
    ::posix_spawnattr_init(&attr);
    if (req.stdin_fd >= 0)
        ::posix_spawn_file_actions_adddup2(&fa, req.stdin_fd, 0);
    else
        ::posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (req.stdout_fd >= 0)
        ::posix_spawn_file_actions_adddup2(&fa, req.stdout_fd, 1);
    else
        ::posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    // The sd-event and signalfd workers block SIGCHLD; their children must not inherit that.
    sigset_t none, def;
    sigemptyset(&none);
    sigemptyset(&def);
    sigaddset(&def, SIGCHLD);
    ::posix_spawnattr_setsigmask(&attr, &none);
    ::posix_spawnattr_setsigdefault(&attr, &def);
    ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    std::vector<char*> argv;
    for (const auto& a : req.argv)
        argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = -1;
    int rc = ::posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), environ);
    ::posix_spawn_file_actions_destroy(&fa);
    ::posix_spawnattr_destroy(&attr);
    if (rc != 0)
        throw std::system_error(rc, std::generic_category(), "posix_spawn " + req.argv[0]);
    return pid;
}

pid_t runner::spawn(const spawn_request& req, std::function<void()> on_exit) {
    pid_t pid = posix_spawn_child(req);
    watch(pid, std::move(on_exit));
    return pid;
}

int zmq_fd(void* socket) {
    int fd = -1;
    size_t len = sizeof fd;
    if (zmq_getsockopt(socket, ZMQ_FD, &fd, &len) != 0)
        throw std::system_error(zmq_errno(), std::generic_category(), "zmq_getsockopt(ZMQ_FD)");
    return fd;
}

void drain_zmq(void* socket, const std::function<bool()>& serve) {
    for (;;) {
        while (serve()) {
        }
        int events = 0;
        size_t len = sizeof events;
        if (zmq_getsockopt(socket, ZMQ_EVENTS, &events, &len) != 0 || !(events & ZMQ_POLLIN))
            return;
    }
}

namespace {

class zreap_runner final : public runner {
  public:
    explicit zreap_runner(zreap::backend b) : loop_(b) {}

    void watch(pid_t pid, std::function<void()> on_exit) override {
        loop_.watch_child(pid, [cb = std::move(on_exit)](const zreap::exit_status&) { cb(); });
    }
    void add_zmq_reader(void* socket, std::function<bool()> serve) override {
        // zmq_poll re-checks ZMQ_EVENTS, so readiness is level-triggered: one per call.
        loop_.add_socket(socket, ZMQ_POLLIN, [serve = std::move(serve)](short) { serve(); });
    }
    void add_timer(std::chrono::milliseconds after, std::function<void()> cb) override {
        loop_.add_timer(after, std::chrono::milliseconds(0), std::move(cb));
    }
    void run_until(const std::function<bool()>& done) override {
        while (!done())
            loop_.run_once(std::chrono::milliseconds(-1));
    }
    std::int64_t polls() const override { return static_cast<std::int64_t>(loop_.stats().polls); }

  private:
    zreap::loop loop_;
};

}  // namespace

std::unique_ptr<runner> make_zreap_runner(const std::string& backend_name) {
    // "default": what zreap::loop{} uses (ZREAP_BACKEND, else the build's default).
    auto b = backend_name == "default" ? zreap::default_backend()
                                       : zreap::backend_from_string(backend_name);
    if (!b)
        throw std::runtime_error("unknown zreap backend " + backend_name);
    return std::make_unique<zreap_runner>(*b);
}

namespace {

struct peer {
    const char* name;
    std::unique_ptr<runner> (*make)();
};

// The peers compiled into this benchmark, in display order.
const std::vector<peer>& peers() {
    static const std::vector<peer> list {
#if BENCH_HAVE_LIBUV
        {"libuv", make_libuv_runner},
#endif
#if BENCH_HAVE_LIBEV
            {"libev", make_libev_runner},
#endif
#if BENCH_HAVE_GLIB
            {"glib", make_glib_runner},
#endif
#if BENCH_HAVE_SDEVENT
            {"sd-event", make_sdevent_runner},
#endif
    };
    return list;
}

}  // namespace

std::vector<std::string> compiled_peers() {
    std::vector<std::string> names;
    for (const peer& p : peers())
        names.emplace_back(p.name);
    return names;
}

bool needs_sigchld_blocked(const std::string& subject) {
    if (subject == "sd-event")
        return true;  // sd_event_add_child refuses otherwise
    if (subject.rfind("zreap:", 0) == 0) {
        auto b = zreap::backend_from_string(subject.substr(6));
        return b && zreap::backend_capabilities(*b).needs_sigchld_blocked;
    }
    return false;
}

std::unique_ptr<runner> make_runner(const std::string& subject) {
    if (subject.rfind("zreap:", 0) == 0)
        return make_zreap_runner(subject.substr(6));
    for (const peer& p : peers())
        if (subject == p.name)
            return p.make();
    throw std::runtime_error("subject " + subject + " is not compiled into this benchmark");
}

}  // namespace bench
