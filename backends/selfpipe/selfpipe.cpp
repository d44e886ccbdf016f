// selfpipe backend: the shared SIGCHLD handler (core/sigchld_hub) writes the exited pid
// into each loop's non-blocking pipe; the pipe's read end is in the zmq_poll set. The
// pipe turns a signal into readiness that stays until it is read, so a SIGCHLD that
// arrives just before zmq_poll still wakes it, on whatever thread the kernel delivered it.
//
// Reaping never uses waitpid(-1): other code's children stay waitable. Per wakeup:
//   1. drain the pipe, then reap the pids it names that this loop watches (the order
//      matters: a SIGCHLD after the drain re-arms the pipe, so nothing is lost);
//   2. peek with waitid(P_ALL, WNOWAIT) for further zombies; reap each one that is ours
//      with waitid(P_PID); the pipe's pid hints are only hints, since standard signals do
//      not queue and one SIGCHLD can stand for many exits;
//   3. only if the peek finds a zombie that is not ours (it would hide ours behind it),
//      fall back to asking each watched pid in turn: O(watched) for that wakeup only.
// All of it is bounded by the loop's per-iteration budget.

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <unordered_set>
#include <vector>

#include "core/child_watcher.hpp"
#include "core/error.hpp"
#include "core/pipe.hpp"
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

    void watch(pid_t pid, int) override {
        watched_.insert(pid);
        // It may have exited already, its SIGCHLD long gone: look at it next iteration.
        hints_.push_back(pid);
    }

    void unwatch(pid_t pid) noexcept override { watched_.erase(pid); }

    bool wants_immediate_poll() noexcept override { return !hints_.empty(); }

    bool reap(const poll_result& r, std::vector<exit_status>& out, std::size_t max) override {
        const std::size_t start = out.size();
        auto full = [&] { return out.size() - start >= max; };
        bool peek = more_;
        if (r.woken) {
            drain();
            peek = true;
        }
        while (!hints_.empty() && !full()) {
            pid_t pid = hints_.back();
            hints_.pop_back();
            if (watched_.count(pid)) try_reap(pid, out);
        }
        if (peek && !full()) peek_and_reap(out, [&] { return full(); });
        more_ = full();
        return more_ || !hints_.empty();
    }

private:
    void drain() {
        pid_t buf[512];
        for (;;) {
            ssize_t n = ::read(pipe_.read.get(), buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;  // EAGAIN: drained
            for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof(pid_t)); ++i)
                if (buf[i] > 0 && watched_.count(buf[i])) hints_.push_back(buf[i]);
        }
    }

    // Reaps @p pid if it has exited. True if it was reaped.
    bool try_reap(pid_t pid, std::vector<exit_status>& out) {
        siginfo_t si{};
        int rc;
        while ((rc = ::waitid(P_PID, static_cast<id_t>(pid), &si, WEXITED | WNOHANG)) < 0 &&
               errno == EINTR) {
        }
        if (rc < 0) {
            if (errno != ECHILD) throw_errno(std::string(who) + ": waitid(P_PID)");
            // Reaped behind our back by other code: report it without a status.
            watched_.erase(pid);
            out.push_back(exit_status::from_wait_status(pid, exit_status::unknown_raw));
            return true;
        }
        if (si.si_pid == 0) return false;  // still running
        watched_.erase(pid);
        out.push_back(exit_status::from_siginfo(si));
        return true;
    }

    template <typename Full>
    void peek_and_reap(std::vector<exit_status>& out, Full full) {
        while (!full()) {
            siginfo_t si{};
            int rc = ::waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT);
            if (rc < 0 && errno == EINTR) continue;
            if (rc < 0 || si.si_pid == 0) return;  // ECHILD (no children) or no zombie
            if (watched_.count(si.si_pid)) {
                try_reap(si.si_pid, out);
                continue;
            }
            scan(out, full);
            return;
        }
    }

    template <typename Full>
    void scan(std::vector<exit_status>& out, Full full) {
        scratch_.assign(watched_.begin(), watched_.end());
        for (pid_t pid : scratch_) {
            if (full()) return;
            try_reap(pid, out);
        }
    }

    pipe_pair pipe_;
    int slot_ = -1;
    std::unordered_set<pid_t> watched_;
    std::vector<pid_t> hints_;
    std::vector<pid_t> scratch_;
    bool more_ = false;
};

bool selfpipe_usable() noexcept { return sigchld_disposition_problem() == nullptr; }

std::unique_ptr<child_watcher> make_selfpipe_watcher(const loop_options&) {
    return std::make_unique<selfpipe_watcher>();
}

}  // namespace

extern const backend_entry selfpipe_backend_entry{
    backend::selfpipe, backend_capabilities(backend::selfpipe), selfpipe_usable,
    make_selfpipe_watcher};

}  // namespace zreap::detail
