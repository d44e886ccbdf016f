// libev backend: libev's own ev_child watchers on its default loop, driven from zreap's
// one zmq_poll loop. libev never blocks here: zreap only ever calls ev_run(EVRUN_NOWAIT).
//
// Route (see docs/backends/libev.md for the measurement behind the choice): zreap owns the
// SIGCHLD handler, libev only reaps.
//   - The shared handler (core/sigchld_hub) writes to this watcher's pipe, which is the
//     wake fd in the zmq_poll set. The pipe keeps the signal as readiness until it is
//     read, so a SIGCHLD taken by any thread, at any moment, wakes the poll.
//   - On a wakeup: drain the pipe, then hand libev the signal with the public
//     ev_feed_signal_event(SIGCHLD) and run ev_run(EVRUN_NOWAIT). libev's SIGCHLD callback
//     loops waitpid(-1) until nothing is left and invokes the ev_child callbacks, which
//     queue the statuses here. Drain before reaping: a SIGCHLD after the drain re-arms the
//     pipe, so no exit is left behind.
//   - libev installs its own SIGCHLD handler in ev_default_loop() and resets SIGCHLD to
//     SIG_DFL in ev_loop_destroy(); both are undone at once, so libev's handler never
//     stays in place and the application's disposition comes back. Without
//     EVFLAG_SIGNALFD, libev does not touch the signal mask, and no thread needs SIGCHLD
//     blocked. This needs no private libev field (no ev_embed trick for its epoll fd).
//
// Hazards, declared in the capabilities rather than hidden:
//   - libev's waitpid(-1) reaps every child of the process, watched or not, including the
//     stop/continue reports of children other code traces (reaps_foreign_children);
//   - ev_child works only on libev's default loop, of which there is one per process, so
//     there is one libev loop per process (multiple_loops == false);
//   - a child must be watched before the loop iterates again after its fork, or libev may
//     reap it first and its status is gone (watch_child then fails with ECHILD).

#include <ev.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "core/child_watcher.hpp"
#include "core/error.hpp"
#include "core/sigchld_hub.hpp"

namespace zreap::detail {

namespace {

constexpr const char* who = "zreap libev backend";

// One libev loop per process: ev_child exists only on libev's default loop.
std::mutex instance_mutex;
bool instance_exists = false;

// Restores the SIGCHLD disposition found at construction when it goes out of scope:
// libev changes it in ev_default_loop() and ev_loop_destroy().
class sigchld_disposition_guard {
  public:
    sigchld_disposition_guard() noexcept : ok_(::sigaction(SIGCHLD, nullptr, &saved_) == 0) {}
    ~sigchld_disposition_guard() {
        if (ok_)
            ::sigaction(SIGCHLD, &saved_, nullptr);
    }
    sigchld_disposition_guard(const sigchld_disposition_guard&) = delete;
    sigchld_disposition_guard& operator=(const sigchld_disposition_guard&) = delete;

  private:
    struct sigaction saved_ {};
    bool ok_;
};

class libev_watcher final : public child_watcher {
  public:
    libev_watcher() {
        std::lock_guard<std::mutex> lock(instance_mutex);
        if (instance_exists)
            throw_errno(EBUSY, std::string(who) +
                                   ": a zreap loop already uses libev in this process (libev "
                                   "watches children only on its one default loop)");
        // Other code in the process created libev's default loop: it may run it, and
        // its runs would reap and report our children behind our back.
        if (ev_default_loop_uc_())
            throw_errno(EBUSY, std::string(who) +
                                   ": libev's default loop already exists in this process "
                                   "(created by other code)");
        require_reapable_sigchld(who);
        {
            sigchld_disposition_guard restore;
            // POLL or SELECT: zreap never blocks in libev, so the cheapest backend that
            // opens no fd of its own. NOENV: LIBEV_FLAGS must not switch on signalfd
            // (which would block SIGCHLD). NOTIMERFD, NOINOTIFY: no fds for features
            // unused here. Not EVFLAG_NOSIGMASK: in libev 4.33 that flag makes
            // ev_signal_start *unblock* the signal; without it the mask is left alone.
            loop_ = ev_default_loop(EVBACKEND_POLL | EVBACKEND_SELECT | EVFLAG_NOENV |
                                    EVFLAG_NOTIMERFD | EVFLAG_NOINOTIFY);
            if (!loop_)
                throw_errno(ENOSYS, std::string(who) + ": ev_default_loop failed");
        }
        // libev's handler is gone again (restored above): from here on, zreap's handler
        // announces every SIGCHLD through the pipe.
        try {
            pipe_.subscribe();
        } catch (...) {
            destroy_libev_loop();
            throw;
        }
        instance_exists = true;
    }

    ~libev_watcher() override {
        for (auto& [pid, w] : watchers_)
            ev_child_stop(loop_, w.get());
        watchers_.clear();
        std::lock_guard<std::mutex> lock(instance_mutex);
        destroy_libev_loop();
        instance_exists = false;
    }

    int wake_fd() const noexcept override { return pipe_.fd(); }

    void watch(pid_t pid, int, bool exited) override {
        // Stored before it is started, so that a failed allocation leaves nothing in
        // libev's lists.
        ev_child* w = watchers_.emplace(pid, std::make_unique<ev_child>()).first->second.get();
        ev_child_init(w, &libev_watcher::on_child, pid, 0);
        w->data = this;
        ev_child_start(loop_, w);
        // Exited already, its SIGCHLD long gone (or taken before this loop existed): let
        // libev look on the next iteration. Not now: running libev here would reap a
        // sibling that the caller has forked but not watched yet. A later exit comes
        // through the pipe like any other, so a running child costs no waitpid(-1) walk.
        check_ = check_ || exited;
    }

    void unwatch(pid_t pid) noexcept override {
        auto it = watchers_.find(pid);
        if (it != watchers_.end()) {
            ev_child_stop(loop_, it->second.get());
            watchers_.erase(it);
        }
        // A status libev reported but the loop has not taken yet belongs to a process
        // that is gone; its pid may be reused and watched again, so drop it.
        for (auto q = queue_.begin(); q != queue_.end();)
            q = q->pid == pid ? queue_.erase(q) : q + 1;
    }

    bool wants_immediate_poll() noexcept override {
        if (check_) {
            check_ = false;
            run_libev();
        }
        return !queue_.empty();
    }

    bool reap(const poll_result& r, std::vector<exit_status>& out, std::size_t max) override {
        // An EINTR is most often zreap's handler, which ran on this thread and has written
        // to the pipe already: look now rather than poll again to learn that.
        if (r.woken || r.interrupted) {
            // Drained first: a SIGCHLD from now on re-arms the pipe.
            if (pipe_.take([](pid_t) {}) || r.woken)
                run_libev();
        }
        for (std::size_t n = 0; n < max && !queue_.empty(); ++n) {
            out.push_back(queue_.front());
            queue_.pop_front();
        }
        return !queue_.empty();
    }

  private:
    // Makes libev's SIGCHLD callback run now: it reaps with waitpid(-1) until nothing is
    // left, and feeds each watched pid's ev_child, whose callback queues the status.
    void run_libev() noexcept {
        ev_feed_signal_event(loop_, SIGCHLD);
        ev_run(loop_, EVRUN_NOWAIT);
    }

    static void on_child(struct ev_loop* loop, ev_child* w, int) {
        auto* self = static_cast<libev_watcher*>(w->data);
        const pid_t pid = w->rpid;
        const int status = w->rstatus;
        ev_child_stop(loop, w);
        self->queue_.push_back(exit_status::from_wait_status(pid, status));
        self->watchers_.erase(pid);  // frees w: nothing touches it after this
    }

    // ev_loop_destroy() closes libev's fds and stops its SIGCHLD watcher, which resets
    // SIGCHLD to SIG_DFL; the guard puts back what was there.
    void destroy_libev_loop() noexcept {
        sigchld_disposition_guard restore;
        ev_loop_destroy(loop_);
        loop_ = nullptr;
    }

    sigchld_pipe pipe_{who};
    struct ev_loop* loop_ = nullptr;
    std::unordered_map<pid_t, std::unique_ptr<ev_child>> watchers_;
    std::deque<exit_status> queue_;
    bool check_ = false;
};

bool libev_usable() noexcept {
    return sigchld_disposition_problem() == nullptr;
}

std::unique_ptr<child_watcher> make_libev_watcher(const loop_options&) {
    return std::make_unique<libev_watcher>();
}

}  // namespace

extern const backend_entry libev_backend_entry{backend::libev, backend_capabilities(backend::libev),
                                               libev_usable, make_libev_watcher,
                                               sigchld_why_unusable};

}  // namespace zreap::detail
