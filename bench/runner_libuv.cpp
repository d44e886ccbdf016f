// libuv peer: uv_spawn() and its exit callback. libuv watches only processes it started
// itself (its SIGCHLD handler scans its own process handles with waitpid(pid, WNOHANG)), so
// fork children are not applicable here and every child this peer watches is uv_spawn'd.

#include <uv.h>

#include <stdexcept>
#include <string>

#include "runner.hpp"

namespace bench {

namespace {

void check(int rc, const char* what) {
    if (rc < 0)
        throw std::runtime_error(std::string("libuv: ") + what + ": " + uv_strerror(rc));
}

struct process {
    uv_process_t h;
    std::function<void()> cb;
};

struct poller {
    uv_poll_t h;
    void* socket;
    std::function<bool()> serve;
};

struct timer {
    uv_timer_t h;
    std::function<void()> cb;
};

template <typename T>
void close_and_delete(T* obj) {
    uv_close(reinterpret_cast<uv_handle_t*>(&obj->h),
             [](uv_handle_t* h) { delete static_cast<T*>(h->data); });
}

class libuv_runner final : public runner {
  public:
    libuv_runner() { check(uv_loop_init(&loop_), "uv_loop_init"); }
    ~libuv_runner() override {
        for (poller* p : pollers_)
            close_and_delete(p);
        uv_run(&loop_, UV_RUN_NOWAIT);
        uv_loop_close(&loop_);
    }

    bool can_watch_foreign_pid() const override { return false; }
    void watch(pid_t, std::function<void()>) override {
        throw std::runtime_error("libuv cannot watch a child it did not spawn");
    }

    pid_t spawn(const spawn_request& req, std::function<void()> on_exit) override {
        auto* p = new process;
        p->h.data = p;
        p->cb = std::move(on_exit);
        std::vector<char*> argv;
        for (const auto& a : req.argv)
            argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        uv_stdio_container_t stdio[2];
        stdio[0].flags = req.stdin_fd >= 0 ? UV_INHERIT_FD : UV_IGNORE;
        stdio[0].data.fd = req.stdin_fd;
        stdio[1].flags = req.stdout_fd >= 0 ? UV_INHERIT_FD : UV_IGNORE;
        stdio[1].data.fd = req.stdout_fd;
        uv_process_options_t o{};
        o.file = argv[0];
        o.args = argv.data();
        o.stdio = stdio;
        o.stdio_count = 2;
        o.exit_cb = [](uv_process_t* h, int64_t, int) {
            auto* self = static_cast<process*>(h->data);
            auto cb = std::move(self->cb);
            close_and_delete(self);
            cb();
        };
        int rc = uv_spawn(&loop_, &p->h, &o);
        if (rc < 0) {
            close_and_delete(p);
            check(rc, "uv_spawn");
        }
        return p->h.pid;
    }

    void add_zmq_reader(void* socket, std::function<bool()> serve) override {
        const int fd = zmq_fd(socket);
        auto* p = new poller{{}, socket, std::move(serve)};
        p->h.data = p;
        check(uv_poll_init(&loop_, &p->h, fd), "uv_poll_init");
        check(uv_poll_start(&p->h, UV_READABLE,
                            [](uv_poll_t* h, int, int) {
                                auto* self = static_cast<poller*>(h->data);
                                drain_zmq(self->socket, self->serve);
                            }),
              "uv_poll_start");
        pollers_.push_back(p);
        drain_zmq(socket, p->serve);
    }

    void add_timer(std::chrono::milliseconds after, std::function<void()> cb) override {
        auto* t = new timer{{}, std::move(cb)};
        t->h.data = t;
        uv_timer_init(&loop_, &t->h);
        uv_timer_start(
            &t->h,
            [](uv_timer_t* h) {
                auto* self = static_cast<timer*>(h->data);
                auto cb = std::move(self->cb);
                close_and_delete(self);
                cb();
            },
            static_cast<uint64_t>(after.count()), 0);
    }

    void run_until(const std::function<bool()>& done) override {
        while (!done())
            uv_run(&loop_, UV_RUN_ONCE);
    }

  private:
    uv_loop_t loop_;
    std::vector<poller*> pollers_;
};

}  // namespace

std::unique_ptr<runner> make_libuv_runner() {
    return std::make_unique<libuv_runner>();
}

}  // namespace bench
