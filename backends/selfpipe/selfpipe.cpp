// selfpipe backend: the shared SIGCHLD handler (core/sigchld_hub) writes the exited pid
// into each loop's non-blocking pipe; the pipe's read end is in the zmq_poll set. The
// pipe turns a signal into readiness that stays until it is read, so a SIGCHLD that
// arrives just before zmq_poll still wakes it, on whatever thread the kernel delivered it.
//
// Per wakeup: drain the pipe, then reap (the order matters: a SIGCHLD after the drain
// re-arms the pipe, so nothing is lost). The pids read from the pipe are hints for
// core/reaper's pid_reaper, which reaps hinted pids, then peeks with waitid(WNOWAIT), and
// never uses waitpid(-1): other code's children stay waitable. All of it is bounded by
// the loop's per-iteration budget.

#include <unistd.h>

#include <cerrno>
#include <vector>

#include "core/child_watcher.hpp"
#include "core/error.hpp"
#include "core/pipe.hpp"
#include "core/reaper.hpp"
#include "core/sigchld_hub.hpp"

namespace zreap::detail {

namespace {

constexpr const char* who = "zreap selfpipe backend";

class selfpipe_watcher final : public child_watcher {
  public:
    selfpipe_watcher() : pipe_(make_nonblocking_pipe(who)) {
        slot_ = sigchld_subscribe_pipe(pipe_.write.get(), who);
    }
    ~selfpipe_watcher() override { sigchld_unsubscribe(slot_); }

    int wake_fd() const noexcept override { return pipe_.read.get(); }

    void watch(pid_t pid, int) override { reaper_.watch(pid); }

    void unwatch(pid_t pid) noexcept override { reaper_.unwatch(pid); }

    bool wants_immediate_poll() noexcept override { return reaper_.has_hints(); }

    bool reap(const poll_result& r, std::vector<exit_status>& out, std::size_t max) override {
        // An EINTR is most often our own handler, which ran on this thread and has written
        // to the pipe already: read it now rather than poll again to learn that it is
        // readable.
        bool signalled = r.woken;
        if (r.woken || r.interrupted)
            signalled = drain() || signalled;
        return reaper_.reap(signalled, out, max);
    }

  private:
    // Drained before reaping: a SIGCHLD after the drain re-arms the pipe. True if anything
    // was read.
    bool drain() {
        pid_t buf[512];
        bool got = false;
        // A read error other than EAGAIN leaves the pipe as it is: the peek still runs.
        drain_fd(pipe_.read.get(), buf, sizeof buf, [&](std::size_t n) {
            got = true;
            for (std::size_t i = 0; i < n / sizeof(pid_t); ++i)
                reaper_.hint(buf[i]);
        });
        return got;
    }

    pipe_pair pipe_;
    int slot_ = -1;
    pid_reaper reaper_{who};
};

bool selfpipe_usable() noexcept {
    return sigchld_disposition_problem() == nullptr;
}

std::unique_ptr<child_watcher> make_selfpipe_watcher(const loop_options&) {
    return std::make_unique<selfpipe_watcher>();
}

}  // namespace

extern const backend_entry selfpipe_backend_entry{backend::selfpipe,
                                                  backend_capabilities(backend::selfpipe),
                                                  selfpipe_usable, make_selfpipe_watcher};

}  // namespace zreap::detail
