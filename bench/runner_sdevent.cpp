// sd-event peer (libsystemd): sd_event_add_child() per child, driven by sd_event_run().
// sd-event watches each child through a pidfd in its epoll set where it can, keeps the child
// a zombie until the callback has run, and requires SIGCHLD blocked in every thread (the
// worker blocks it before anything else starts).

#include <systemd/sd-event.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include "runner.hpp"

namespace bench {

namespace {

void check(int rc, const char* what) {
    if (rc < 0)
        throw std::runtime_error(std::string("sd-event: ") + what + ": " + std::strerror(-rc));
}

struct child_w {
    sd_event_source* src = nullptr;
    std::function<void()> cb;
};

struct io_w {
    void* socket;
    std::function<bool()> serve;
};

struct timer_w {
    sd_event_source* src = nullptr;
    std::function<void()> cb;
};

class sdevent_runner final : public runner {
  public:
    sdevent_runner() { check(sd_event_new(&ev_), "sd_event_new"); }
    ~sdevent_runner() override {
        for (sd_event_source* s : ios_)
            sd_event_source_unref(s);
        for (io_w* w : io_data_)
            delete w;
        sd_event_unref(ev_);
    }

    void watch(pid_t pid, std::function<void()> on_exit) override {
        auto* c = new child_w;
        c->cb = std::move(on_exit);
        int rc = sd_event_add_child(
            ev_, &c->src, pid, WEXITED,
            [](sd_event_source* s, const siginfo_t*, void* data) -> int {
                auto* self = static_cast<child_w*>(data);
                auto cb = std::move(self->cb);
                sd_event_source_unref(s);  // allowed from its own callback
                delete self;
                cb();
                return 0;
            },
            c);
        if (rc < 0)
            delete c;
        check(rc, "sd_event_add_child");
    }

    void add_zmq_reader(void* socket, std::function<bool()> serve) override {
        const int fd = zmq_fd(socket);
        auto* w = new io_w{socket, std::move(serve)};
        io_data_.push_back(w);
        sd_event_source* s = nullptr;
        check(sd_event_add_io(
                  ev_, &s, fd, EPOLLIN,
                  [](sd_event_source*, int, uint32_t, void* data) -> int {
                      auto* self = static_cast<io_w*>(data);
                      drain_zmq(self->socket, self->serve);
                      return 0;
                  },
                  w),
              "sd_event_add_io");
        ios_.push_back(s);
        drain_zmq(socket, w->serve);
    }

    void add_timer(std::chrono::milliseconds after, std::function<void()> cb) override {
        auto* t = new timer_w;
        t->cb = std::move(cb);
        check(sd_event_add_time_relative(
                  ev_, &t->src, CLOCK_MONOTONIC, static_cast<uint64_t>(after.count()) * 1000, 1,
                  [](sd_event_source* s, uint64_t, void* data) -> int {
                      auto* self = static_cast<timer_w*>(data);
                      auto cb = std::move(self->cb);
                      sd_event_source_unref(s);
                      delete self;
                      cb();
                      return 0;
                  },
                  t),
              "sd_event_add_time_relative");
    }

    void run_until(const std::function<bool()>& done) override {
        while (!done())
            check(sd_event_run(ev_, UINT64_MAX), "sd_event_run");
    }

  private:
    sd_event* ev_ = nullptr;
    std::vector<sd_event_source*> ios_;
    std::vector<io_w*> io_data_;
};

}  // namespace

std::unique_ptr<runner> make_sdevent_runner() {
    return std::make_unique<sdevent_runner>();
}

}  // namespace bench
