// libev peer, used natively: ev_child watchers on the default loop, driven by ev_run.
// libev's own SIGCHLD handler reaps with waitpid(-1) and looks the pid up in a small hash
// of child watchers.

#include <ev.h>

#include <stdexcept>

#include "runner.hpp"

namespace bench {

namespace {

struct child_w {
    ev_child w;
    std::function<void()> cb;
};

struct io_w {
    ev_io w;
    void* socket;
    std::function<bool()> serve;
};

struct timer_w {
    ev_timer w;
    std::function<void()> cb;
};

class libev_runner final : public runner {
  public:
    libev_runner() : loop_(ev_default_loop(0)) {
        if (!loop_)
            throw std::runtime_error("libev: ev_default_loop failed");
    }
    ~libev_runner() override {
        for (io_w* w : ios_) {
            ev_io_stop(loop_, &w->w);
            delete w;
        }
    }

    void watch(pid_t pid, std::function<void()> on_exit) override {
        auto* c = new child_w;
        c->cb = std::move(on_exit);
        ev_child_init(
            &c->w,
            [](struct ev_loop* l, ev_child* w, int) {
                auto* self = static_cast<child_w*>(w->data);
                ev_child_stop(l, w);
                auto cb = std::move(self->cb);
                delete self;
                cb();
            },
            pid, 0);
        c->w.data = c;
        ev_child_start(loop_, &c->w);
    }

    void add_zmq_reader(void* socket, std::function<bool()> serve) override {
        const int fd = zmq_fd(socket);
        auto* w = new io_w;
        w->socket = socket;
        w->serve = std::move(serve);
        ev_io_init(
            &w->w,
            [](struct ev_loop*, ev_io* io, int) {
                auto* self = static_cast<io_w*>(io->data);
                drain_zmq(self->socket, self->serve);
            },
            fd, EV_READ);
        w->w.data = w;
        ev_io_start(loop_, &w->w);
        ios_.push_back(w);
        drain_zmq(socket, w->serve);
    }

    void add_timer(std::chrono::milliseconds after, std::function<void()> cb) override {
        auto* t = new timer_w;
        t->cb = std::move(cb);
        ev_timer_init(
            &t->w,
            [](struct ev_loop*, ev_timer* w, int) {
                auto* self = static_cast<timer_w*>(w->data);
                auto cb = std::move(self->cb);
                delete self;  // a one-shot ev_timer is stopped before its callback
                cb();
            },
            static_cast<double>(after.count()) / 1000.0, 0.0);
        t->w.data = t;
        ev_timer_start(loop_, &t->w);
    }

    void run_until(const std::function<bool()>& done) override {
        while (!done())
            ev_run(loop_, EVRUN_ONCE);
    }

  private:
    struct ev_loop* loop_;
    std::vector<io_w*> ios_;
};

}  // namespace

std::unique_ptr<runner> make_libev_runner() {
    return std::make_unique<libev_runner>();
}

}  // namespace bench
