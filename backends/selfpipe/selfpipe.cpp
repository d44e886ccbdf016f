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
#include "core/reaper.hpp"
#include "core/sigchld_hub.hpp"

namespace zreap::detail {

namespace {

constexpr const char* who = "zreap selfpipe backend";

class selfpipe_watcher final : public child_watcher {
  public:
    selfpipe_watcher() { pipe_.subscribe(); }

    int wake_fd() const noexcept override { return pipe_.fd(); }

    void watch(pid_t pid, int, bool exited) override { reaper_.watch(pid, exited); }

    void unwatch(pid_t pid) noexcept override { reaper_.unwatch(pid); }

    bool wants_immediate_poll() noexcept override { return reaper_.has_hints(); }

    bool reap(const poll_result& r, std::vector<exit_status>& out, std::size_t max) override {
        // An EINTR is most often our own handler, which ran on this thread and has written
        // to the pipe already: read it now rather than poll again to learn that it is
        // readable.
        bool signalled = r.woken;
        if (r.woken || r.interrupted)
            signalled = pipe_.take([&](pid_t pid) { reaper_.hint(pid); }) || signalled;
        return reaper_.reap(signalled, out, max);
    }

  private:
    pid_reaper reaper_{who};
    sigchld_pipe pipe_{who};
};

bool selfpipe_usable() noexcept {
    return sigchld_disposition_problem() == nullptr;
}

std::unique_ptr<child_watcher> make_selfpipe_watcher(const loop_options&) {
    return std::make_unique<selfpipe_watcher>();
}

}  // namespace

extern const backend_entry selfpipe_backend_entry{
    backend::selfpipe, backend_capabilities(backend::selfpipe), selfpipe_usable,
    make_selfpipe_watcher, sigchld_why_unusable};

}  // namespace zreap::detail
