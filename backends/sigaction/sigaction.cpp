// sigaction backend: the original article's design. The shared SIGCHLD handler
// (core/sigchld_hub) sets this loop's flag, and the signal itself makes the loop thread's
// zmq_poll return EINTR; there is no fd in the poll set. Kept for portability and for
// comparison with the race-free backends, because it has a race that cannot be closed:
//
//     wants_immediate_poll(): flag? -> no       <- SIGCHLD lands here: flag set,
//     zmq_poll(..., timeout)                       nothing left to interrupt
//
// libzmq 4.3.4 has no zmq_ppoll (an atomic mask swap around the wait), and unblocking the
// signal just before zmq_poll only delivers it there, still outside the wait. So the
// backend keeps the window short (the flag is the last thing checked before the loop
// calls zmq_poll), bounds every wait by loop_options::wakeup_cap while it watches
// children, and counts the exits that reached it without an EINTR or a pre-poll flag
// (lost_wakeups()).
//
// The handler runs on whatever thread the kernel picks. When that is not the loop thread,
// the hub forwards the signal there with pthread_kill, so the loop thread's wait is still
// interrupted; the thread the hub forwards to is refreshed before every poll, because a
// loop may be made on one thread and run on another.
//
// Reaping is core/reaper's pid_reaper, shared with selfpipe and signalfd: never
// waitpid(-1), only watched pids, bounded by the loop's per-iteration budget. Like theirs,
// it gets the pids the signals named (si_pid): the hub's handler stores each in this
// loop's sigchld_hints before it sets the flag, and reap() hands them to the reaper, which
// reaps those first and peeks with waitid(P_ALL, WNOWAIT), O(children of the process), only
// on the next, non-blocking iteration. A hint dropped because the ring was full costs
// nothing but that: the flag is set anyway, and the peek finds the child. It looks after
// a flag, an EINTR, or once per cap as a safety net (a signal that never arrives, e.g.
// because every thread blocks SIGCHLD, still costs no more than the cap).

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <string>
#include <vector>

#include "core/child_watcher.hpp"
#include "core/error.hpp"
#include "core/reaper.hpp"
#include "core/sigchld_hub.hpp"

namespace zreap::detail {

namespace {

constexpr const char* who = "zreap sigaction backend";

using clock = std::chrono::steady_clock;

class sigaction_watcher final : public child_watcher {
  public:
    explicit sigaction_watcher(std::chrono::milliseconds cap) {
        if (cap.count() <= 0)
            throw_errno(EINVAL, std::string(who) +
                                    ": loop_options::wakeup_cap must be positive "
                                    "(it bounds every wait while children are "
                                    "watched)");
        cap_ms_ = cap.count() > INT_MAX ? INT_MAX : static_cast<int>(cap.count());
        cap_ = std::chrono::milliseconds(cap_ms_);
        require_reapable_sigchld(who);
        thread_ = pthread_self();
        slot_ = sigchld_subscribe_flag(&flag_, &hints_, thread_, who);
    }
    ~sigaction_watcher() override { sigchld_unsubscribe(slot_); }

    int wake_fd() const noexcept override { return -1; }

    // Without watched children no exit can be lost, so an idle loop that watches none never
    // wakes up on its own; with children, the cap bounds what a lost wakeup costs.
    int max_wait_ms() const noexcept override { return reaper_.empty() ? -1 : cap_ms_; }

    void watch(pid_t pid, int, bool exited) override {
        if (reaper_.empty())
            next_peek_ = clock::now() + cap_;
        reaper_.watch(pid, exited);
    }

    void unwatch(pid_t pid) noexcept override { reaper_.unwatch(pid); }

    bool wants_immediate_poll() noexcept override {
        pthread_t self = pthread_self();
        if (!pthread_equal(self, thread_)) {
            thread_ = self;
            sigchld_set_thread(slot_, self);
        }
        // Last, so that the window between this check and zmq_poll is as short as the loop
        // allows. exchange, not load + store: a signal between the two would be lost.
        // Kept until reap() runs, not overwritten: the loop skips reap() while its queue of
        // pending exits is full, and a flag taken then must still lead to a look.
        if (flag_.exchange(0, std::memory_order_acq_rel) != 0)
            seen_ = true;
        return seen_ || reaper_.has_hints();
    }

    bool reap(const poll_result& r, std::vector<exit_status>& out, std::size_t max) override {
        // Announced: the flag was up before the poll (timeout 0), or the signal interrupted
        // it, or the last call ran out of budget. Anything else that finds an exit found it
        // only because the poll returned for another reason: a lost wakeup.
        const bool announced = seen_ || r.interrupted || more_;
        seen_ = false;
        // Consumed before peeking: a SIGCHLD after this sets it again, so nothing is lost.
        const bool late = flag_.exchange(0, std::memory_order_acq_rel) != 0;
        // Exits found through the hints of freshly watched pids were never announced by a
        // signal of their own; they are not lost wakeups. Taken before the signals' hints
        // join them: those came with the flag, and count as the flag does.
        const bool had_hints = reaper_.has_hints();
        // After the flag: every pid stored before the flag was set is here now.
        take_hints();
        if (reaper_.empty()) {
            more_ = false;
            return reaper_.reap(false, out, max);  // only drops stale hints
        }
        const clock::time_point now = clock::now();
        const bool due = now >= next_peek_;  // the safety net: once per cap at least
        const bool look = announced || late || due;
        if (look)
            next_peek_ = now + cap_;
        const std::size_t before = out.size();
        bool more = reaper_.reap(look, out, max);
        if (look && !announced && !had_hints && out.size() > before)
            ++lost_;
        more_ = out.size() - before >= max;
        return more;
    }

    std::uint64_t lost_wakeups() const noexcept override { return lost_; }

  private:
    void take_hints() {
        pid_t buf[sigchld_hints::capacity];
        const std::size_t n = hints_.take(buf, sigchld_hints::capacity);
        for (std::size_t i = 0; i < n; ++i)
            reaper_.hint(buf[i]);
    }

    // Both outlive the subscription: the destructor's body unsubscribes first.
    std::atomic<int> flag_{0};
    sigchld_hints hints_;
    int slot_ = -1;
    pthread_t thread_{};
    int cap_ms_ = 0;
    std::chrono::milliseconds cap_{0};
    clock::time_point next_peek_{};
    bool seen_ = false;  // the flag was up at a pre-poll check since the last reap()
    bool more_ = false;  // the last reap ran out of budget
    std::uint64_t lost_ = 0;
    pid_reaper reaper_{who};
};

bool sigaction_usable() noexcept {
    return sigchld_disposition_problem() == nullptr;
}

std::unique_ptr<child_watcher> make_sigaction_watcher(const loop_options& options) {
    return std::make_unique<sigaction_watcher>(options.wakeup_cap);
}

}  // namespace

extern const backend_entry sigaction_backend_entry{
    backend::sigaction, backend_capabilities(backend::sigaction), sigaction_usable,
    make_sigaction_watcher, sigchld_why_unusable};

}  // namespace zreap::detail
