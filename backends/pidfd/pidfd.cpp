// pidfd backend: one pidfd per watched child. The first few (direct_count) are polled
// directly in the loop's poll set; the rest go into one epoll fd, and that epoll fd is in
// the poll set. A wakeup costs O(ready children), not O(watched children), and nothing here
// ever touches a child it was not given: waitid(P_PIDFD) reaps exactly one process, and no
// signal is involved at all.
//
// A child traced by another process (strace -f, gdb) is a special case: at its exit the
// tracer is told first and holds the zombie until it lets go, so the pidfd reads as exited
// while waitid(P_PIDFD, WNOHANG) still finds nothing to reap. Nothing on the pidfd marks the
// release (it stays readable throughout), so such a child is *held*: it leaves the poll set
// and is tried again after a backoff that grows from 1 ms to 100 ms (see hold()).
//
// Kernel: pidfd_open 5.3, waitid(P_PIDFD) 5.4. glibc 2.36's <sys/pidfd.h> lacks an
// extern "C" guard, so the system call is made directly.

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <exception>
#include <iterator>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/child_watcher.hpp"
#include "core/error.hpp"
#include "core/unique_fd.hpp"
#include "core/waitid_linux.hpp"

namespace zreap::detail {

namespace {

int sys_pidfd_open(pid_t pid, unsigned flags) noexcept {
    return static_cast<int>(::syscall(SYS_pidfd_open, pid, flags));
}

// What an EMFILE from watch() says beyond the errno: the limit, how many children this loop
// holds a pidfd for, and the ways out.
std::string fd_limit_remedy(std::size_t watched) {
    struct rlimit rl {};
    const bool known = ::getrlimit(RLIMIT_NOFILE, &rl) == 0;
    auto show = [known](rlim_t v) {
        return known && v != RLIM_INFINITY ? std::to_string(v) : std::string("?");
    };
    return ": the fd table is full at the RLIMIT_NOFILE soft limit of " + show(rl.rlim_cur) +
           " (hard limit " + show(rl.rlim_max) + ") with " + std::to_string(watched) +
           " children watched by this loop, one pidfd each. Raise the limits (ulimit -n, "
           "setrlimit; loop_options::raise_fd_limit raises the soft limit to the hard one "
           "by itself), or use a backend with no fd per child: selfpipe, or io_uring, which "
           "costs every exit time in proportion to the children it watches "
           "(docs/backends/io_uring.md)";
}

class pidfd_watcher final : public child_watcher {
  public:
    pidfd_watcher() : epoll_(::epoll_create1(EPOLL_CLOEXEC)) {
        if (!epoll_)
            throw_errno("zreap pidfd backend: epoll_create1");
        std::fill(std::begin(direct_), std::end(direct_), -1);
    }

    int wake_fd() const noexcept override { return epoll_.get(); }
    std::size_t direct_slots() const noexcept override { return direct_count; }
    const int* direct_fds() const noexcept override { return direct_; }

    // No limit while no child is held, so an idle loop never wakes up on its own; else
    // until the next retry is due, rounded up so that the poll does not end just before it.
    int max_wait_ms() const noexcept override {
        if (held_.empty())
            return -1;
        const auto now = clock::now();
        if (next_retry_ <= now)
            return 0;
        return static_cast<int>(std::min<long long>(
            std::chrono::ceil<std::chrono::milliseconds>(next_retry_ - now).count(),
            max_backoff.count()));
    }

    // A pidfd polls readable for a child that has exited already: @p exited is not needed.
    void watch(pid_t pid, int pidfd, bool) override {
        // Built only for an error message: watch() is on every child's path.
        auto what = [pid] {
            return "zreap pidfd backend: watch_child(" + std::to_string(pid) + ")";
        };
        // A pidfd handed over by the caller came from clone(CLONE_PIDFD): it names this
        // very process even if the pid is reused later. Otherwise pidfd_open now; the loop
        // has just checked that pid is our unreaped child, so the pid cannot have been
        // recycled in between unless other code reaps children it does not own.
        // Room for this child's fd among the retired ones, so that retire() never allocates.
        // Likewise room among the held ones, so that hold() never allocates.
        if (const std::size_t need = pidfds_.size() + retired_.size() + 1;
            retired_.capacity() < need)
            retired_.reserve(std::max(need, 2 * retired_.capacity()));
        if (const std::size_t need = pidfds_.size() + 1; held_.capacity() < need)
            held_.reserve(std::max(need, 2 * held_.capacity()));
        // A pidfd lent by the loop is used as it is: it stays open while watched.
        entry e{pidfd >= 0 ? unique_fd() : unique_fd(sys_pidfd_open(pid, 0)), pidfd};
        if (pidfd < 0) {
            if (!e.owned) {
                const int err = errno;
                throw_errno(err, what() + ": pidfd_open" +
                                     (err == EMFILE ? fd_limit_remedy(pidfds_.size()) : ""));
            }
            e.fd = e.owned.get();
        }
        if (pidfds_.size() < direct_count) {
            for (int i = 0; i < static_cast<int>(direct_count); ++i) {
                if (direct_[i] < 0) {
                    e.slot = i;
                    break;
                }
            }
        }
        if (e.slot < 0) {
            if (!arm(e.fd, pid, EPOLL_CTL_ADD))
                throw_errno(what() + ": epoll_ctl(ADD)");
            e.in_epoll = true;
        }
        auto it = pidfds_.emplace(pid, std::move(e)).first;
        if (it->second.slot >= 0) {
            direct_[it->second.slot] = it->second.fd;
            direct_pid_[it->second.slot] = pid;
        }
    }

    void unwatch(pid_t pid) noexcept override {
        auto it = pidfds_.find(pid);
        if (it == pidfds_.end())
            return;
        if (it->second.slot >= 0)
            direct_[it->second.slot] = -1;
        else if (it->second.in_epoll)
            ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.fd, nullptr);
        if (it->second.held)
            forget_held(pid);
        pidfds_.erase(it);
    }

    // A pidfd is readable as soon as its process is a zombie, level-triggered, so a child
    // that had exited before watch() wakes the poll at once: nothing to wait for here. The
    // pidfds reaped since the last poll are closed now (see retire()).
    bool wants_immediate_poll() noexcept override {
        retired_.clear();
        return false;
    }

    bool reap(const poll_result& r, std::vector<exit_status>& out, std::size_t max) override {
        const std::size_t limit = out.size() + max;
        bool direct_more = false;
        std::exception_ptr error;  // the first failure; the rest of the batch is still reaped
        retry_held(out, limit, error);
        if (r.direct_revents) {
            for (std::size_t i = 0; i < direct_count; ++i) {
                if (!r.direct_revents[i] || direct_[i] < 0)
                    continue;
                if (out.size() >= limit) {
                    direct_more = true;  // still readable: the next poll returns at once
                    break;
                }
                auto it = pidfds_.find(direct_pid_[i]);
                if (it == pidfds_.end())
                    continue;
                try {
                    reap_one(it, out);
                } catch (...) {
                    if (!error)
                        error = std::current_exception();
                }
            }
        }
        if ((!r.woken && !more_) || out.size() >= limit) {
            more_ = more_ || (r.woken && out.size() >= limit);
            if (error)
                std::rethrow_exception(error);
            return more_ || direct_more;
        }
        epoll_event evs[256];
        int cap = static_cast<int>(std::min<std::size_t>(limit - out.size(), 256));
        int n;
        while ((n = ::epoll_wait(epoll_.get(), evs, cap, 0)) < 0 && errno == EINTR) {
        }
        if (n < 0) {
            if (error)
                std::rethrow_exception(error);
            throw_errno("zreap pidfd backend: epoll_wait");
        }
        for (int i = 0; i < n; ++i) {
            const pid_t pid = static_cast<pid_t>(evs[i].data.u64);
            auto it = pidfds_.find(pid);
            if (it == pidfds_.end())
                continue;
            try {
                reap_one(it, out);
            } catch (...) {
                // epoll_wait disarmed it (EPOLLONESHOT): arm it again, or its exit would
                // never be reported however often the loop runs after this error.
                if (auto still = pidfds_.find(pid); still != pidfds_.end() && !still->second.held)
                    arm(still->second.fd, pid, EPOLL_CTL_MOD);
                if (!error)
                    error = std::current_exception();
            }
        }
        more_ = n == cap;
        // One child that cannot be reaped does not hold back the others of the batch: they
        // are in @p out, which the loop keeps when this throws.
        if (error)
            std::rethrow_exception(error);
        return more_ || direct_more;
    }

  private:
    using clock = std::chrono::steady_clock;

    // Few enough that polling them costs less than the epoll_wait it saves (one exit at a
    // time is the common case); more children than this go into the epoll set.
    static constexpr std::size_t direct_count = 4;

    // The retries of a held child: the first soon after it was found held (strace reaps its
    // tracees as soon as it is told, so the wait is short there), then each one twice as
    // late, up to max_backoff (a debugger can hold a zombie for as long as its user likes).
    // While a child is held the loop wakes up at most ~10 times a second for it, and notices
    // the release at most max_backoff late. Contract.TracedChildHeldByTracerNeitherSpinsNor-
    // IsLost, two children held 400 ms: 11 polls and 0.0005 s of CPU, the release noticed
    // 26-29 ms late; with the held pidfds left in the poll set, 53,044 polls and 0.21 s.
    static constexpr std::chrono::milliseconds first_backoff{1};
    static constexpr std::chrono::milliseconds max_backoff{100};

    struct entry {
        unique_fd owned;        // from pidfd_open; none when the loop lent its pidfd
        int fd = -1;            // owned, or the lent one
        int slot = -1;          // index in direct_, or -1
        bool in_epoll = false;  // registered in the epoll set (armed or disarmed)
        bool held = false;      // exited but held by a tracer: out of the poll set, in held_
        clock::time_point retry_at{};
        clock::duration backoff{};
    };
    using entry_iter = std::unordered_map<pid_t, entry>::iterator;

    // Adds (EPOLL_CTL_ADD) or re-arms (EPOLL_CTL_MOD) @p fd in the epoll set for one report.
    bool arm(int fd, pid_t pid, int op) noexcept {
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLONESHOT;
        ev.data.u64 = static_cast<std::uint64_t>(pid);
        return ::epoll_ctl(epoll_.get(), op, fd, &ev) == 0;
    }

    // Reaps the child of @p it if it can be reaped now, appending its status to @p out; true
    // if it was (or turned out to be reaped by other code), false if waitid found nothing.
    bool try_reap(entry_iter it, std::vector<exit_status>& out) {
        const pid_t pid = it->first;
        siginfo_t si{};
        struct rusage ru {};
        if (waitid_with_usage(P_PIDFD, static_cast<id_t>(it->second.fd), &si, WEXITED | WNOHANG,
                              &ru) < 0) {
            // ECHILD: something else reaped our child (a waitpid(-1) elsewhere, or
            // SIGCHLD set to SIG_IGN since). Its status is gone; report that, rather
            // than never report the exit at all.
            if (errno != ECHILD)
                throw_errno("zreap pidfd backend: waitid(P_PIDFD)");
            // Status first: if that allocation throws, the child is still watched.
            out.push_back(exit_status::from_wait_status(pid, exit_status::unknown_raw));
            retire(it);
            return true;
        }
        if (si.si_pid == 0)
            return false;
        exit_status st = exit_status::from_siginfo(si);
        st.set_usage(ru);
        out.push_back(st);
        retire(it);
        return true;
    }

    // One ready pidfd: reaps its child, or holds it if it cannot be reaped yet.
    void reap_one(entry_iter it, std::vector<exit_status>& out) {
        if (!try_reap(it, out))
            hold(it);
    }

    // A pidfd reads as exited, but waitid finds nothing to reap: a tracer holds the zombie
    // (it is told of the exit first and keeps it until it waits for it, detaches or exits).
    // Left in the poll set, the readable pidfd would make the loop spin for as long as the
    // tracer holds it, and its readiness cannot mark the release (it stays readable). So
    // it leaves the poll set: a direct one leaves direct_, an epoll one stays as epoll_wait
    // left it, disarmed (EPOLLONESHOT); and reap() tries it again after a backoff.
    void hold(entry_iter it) noexcept {
        entry& e = it->second;
        if (e.slot >= 0) {
            direct_[e.slot] = -1;
            e.slot = -1;
        }
        e.held = true;
        e.backoff = first_backoff;
        e.retry_at = clock::now() + e.backoff;
        next_retry_ = held_.empty() ? e.retry_at : std::min(next_retry_, e.retry_at);
        held_.push_back(it->first);  // capacity reserved in watch()
    }

    // Tries the held children whose retry is due; one still held is tried again twice as
    // late (at most max_backoff). Failures go to @p error, as in reap().
    void retry_held(std::vector<exit_status>& out, std::size_t limit, std::exception_ptr& error) {
        if (held_.empty())
            return;
        const auto now = clock::now();
        if (now < next_retry_)
            return;
        auto next = clock::time_point::max();
        for (std::size_t i = 0; i < held_.size();) {
            entry_iter it = pidfds_.find(held_[i]);  // held_ lists only watched pids
            entry& e = it->second;
            if (e.retry_at <= now && out.size() < limit) {
                bool reaped = false;
                try {
                    reaped = try_reap(it, out);
                } catch (...) {
                    if (!error)
                        error = std::current_exception();
                }
                if (reaped)
                    continue;  // retire() put the last held pid at i
                e.backoff = std::min<clock::duration>(2 * e.backoff, max_backoff);
                e.retry_at = now + e.backoff;
            }
            next = std::min(next, e.retry_at);
            ++i;
        }
        next_retry_ = next;
    }

    // Takes @p pid out of held_ (order does not matter: the last one takes its place).
    void forget_held(pid_t pid) noexcept {
        auto h = std::find(held_.begin(), held_.end(), pid);
        if (h == held_.end())
            return;
        *h = held_.back();
        held_.pop_back();
    }

    // A reaped pidfd stays readable (POLLIN|POLLHUP): it must leave the poll set before
    // the next poll or the loop would spin. A direct one leaves direct_; an epoll one was
    // disarmed by EPOLLONESHOT when epoll_wait reported it, so closing it is enough, even
    // while a forked child still holds a copy of it (which keeps the registration alive,
    // disarmed). That saves the epoll_ctl(DEL) per exit.
    //
    // The close itself waits until just before the next poll, so that it is not between
    // the exit and its callback: one system call fewer on the notice path. Measured with
    // the paired floor (bench/zreap_bench lat_exec, four alternating runs of 300 samples),
    // exit to callback went from 1.14x-1.16x the floor to 1.09x-1.10x. An earlier, unpaired
    // measurement had said the opposite (p50 125 us against 74 us), which the paired runs
    // did not reproduce: it was most likely drift between the workers.
    void retire(entry_iter it) noexcept {
        if (it->second.slot >= 0)
            direct_[it->second.slot] = -1;
        if (it->second.held)
            forget_held(it->first);
        if (it->second.owned)
            retired_.push_back(std::move(it->second.owned));  // capacity reserved in watch()
        pidfds_.erase(it);
    }

    unique_fd epoll_;
    std::unordered_map<pid_t, entry> pidfds_;
    int direct_[direct_count];
    pid_t direct_pid_[direct_count] = {};
    std::vector<unique_fd> retired_;  // reaped, closed before the next poll
    std::vector<pid_t> held_;         // exited but held by a tracer; see hold()
    clock::time_point next_retry_{};  // the earliest retry_at in held_, if any
    bool more_ = false;
};

bool pidfd_usable() noexcept {
    // A real probe, not a version check: the calls can be missing (kernel < 5.4) or
    // refused by a seccomp filter (ENOSYS or EPERM) in a kernel that has them.
    unique_fd self(sys_pidfd_open(::getpid(), 0));
    // A full fd table says nothing about the kernel or a filter: report usable, so that
    // the loop fails with the real EMFILE instead of "not usable" (or a silent fallback).
    if (!self)
        return errno == EMFILE || errno == ENFILE;
    siginfo_t si{};
    // We are not our own child: a kernel with P_PIDFD says ECHILD, one without says EINVAL.
    if (waitid_with_usage(P_PIDFD, static_cast<id_t>(self.get()), &si, WEXITED | WNOHANG) == 0 ||
        errno != ECHILD)
        return false;
    unique_fd ep(::epoll_create1(EPOLL_CLOEXEC));
    return static_cast<bool>(ep);
}

std::unique_ptr<child_watcher> make_pidfd_watcher(const loop_options&) {
    return std::make_unique<pidfd_watcher>();
}

}  // namespace

extern const backend_entry pidfd_backend_entry{backend::pidfd, backend_capabilities(backend::pidfd),
                                               pidfd_usable, make_pidfd_watcher};

}  // namespace zreap::detail
