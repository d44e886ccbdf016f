// GLib peer: g_child_watch_add() on the default main context, driven by
// g_main_context_iteration(). GLib >= 2.74 watches each child through a pidfd where the
// kernel has them, and falls back to a SIGCHLD handler and a waitpid scan otherwise.

#include <glib-unix.h>
#include <glib.h>

#include "runner.hpp"

namespace bench {

namespace {

struct child_w {
    std::function<void()> cb;
};

struct io_w {
    void* socket;
    std::function<bool()> serve;
};

struct timer_w {
    std::function<void()> cb;
};

class glib_runner final : public runner {
  public:
    glib_runner() : ctx_(g_main_context_default()) {}
    ~glib_runner() override {
        for (guint id : ios_)
            g_source_remove(id);
        for (io_w* w : io_data_)
            delete w;
    }

    void watch(pid_t pid, std::function<void()> on_exit) override {
        auto* c = new child_w{std::move(on_exit)};
        g_child_watch_add(
            pid,
            [](GPid p, gint, gpointer data) {
                auto* self = static_cast<child_w*>(data);
                g_spawn_close_pid(p);
                auto cb = std::move(self->cb);
                delete self;
                cb();
            },
            c);
    }

    void add_zmq_reader(void* socket, std::function<bool()> serve) override {
        const int fd = zmq_fd(socket);
        auto* w = new io_w{socket, std::move(serve)};
        io_data_.push_back(w);
        ios_.push_back(g_unix_fd_add(
            fd, G_IO_IN,
            [](gint, GIOCondition, gpointer data) -> gboolean {
                auto* self = static_cast<io_w*>(data);
                drain_zmq(self->socket, self->serve);
                return G_SOURCE_CONTINUE;
            },
            w));
        drain_zmq(socket, w->serve);
    }

    void add_timer(std::chrono::milliseconds after, std::function<void()> cb) override {
        auto* t = new timer_w{std::move(cb)};
        g_timeout_add(
            static_cast<guint>(after.count()),
            [](gpointer data) -> gboolean {
                auto* self = static_cast<timer_w*>(data);
                auto cb = std::move(self->cb);
                delete self;
                cb();
                return G_SOURCE_REMOVE;
            },
            t);
    }

    void run_until(const std::function<bool()>& done) override {
        while (!done())
            g_main_context_iteration(ctx_, TRUE);
    }

  private:
    GMainContext* ctx_;
    std::vector<guint> ios_;
    std::vector<io_w*> io_data_;
};

}  // namespace

std::unique_ptr<runner> make_glib_runner() {
    return std::make_unique<glib_runner>();
}

}  // namespace bench
