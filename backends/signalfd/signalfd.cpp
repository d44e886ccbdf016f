// signalfd backend: SIGCHLD is blocked in every thread of the process, so it stays pending
// until read from a signalfd that sits in the zmq_poll set. A pending signal keeps the
// signalfd readable, so an exit just before zmq_poll still wakes it.
//
// Blocked in every thread is the whole difference between working and losing exits: a
// thread that leaves SIGCHLD unblocked can receive it, and the signalfd never sees it. Two
// defences, because neither is enough alone:
//
//   - the check (sigchld_mask_linux): the loop blocks SIGCHLD in the thread that makes it
//     and refuses, naming the thread, if any other thread visibly leaves it unblocked:
//     every thread at construction, and on every watch() the threads created since and
//     those still being created at the last check. It cannot see a thread that unblocks
//     SIGCHLD after it was checked, nor one that is about to when it is read;
//   - the rescue: while the loop lives, the process-wide SIGCHLD handler of core/sigchld_hub
//     is installed with this loop's rescue pipe as its one subscriber. It never runs while
//     every thread blocks SIGCHLD; a SIGCHLD that reaches a thread which does not block it
//     runs it there, and it writes the pid to the rescue pipe, which the loop polls as a
//     direct fd beside the signalfd: the exit is reaped as usual and counted
//     (loop_stats::rescued_signals). Without it such a signal was discarded (SIG_DFL):
//     200 tries of "start a thread, make the loop, fork, watch" lost 21 and 102 exits in
//     two runs (ContractThreads.ThreadStartingBesideTheLoopLosesNoExit, before the fix).
//
// The refusal stays although the rescue would report those exits: the rescue runs a signal
// handler on a thread the application did not expect one on (its blocking calls may fail
// with EINTR), which is what a program choosing this backend wants to avoid; so a thread
// seen leaving SIGCHLD unblocked is an error, and the rescue only covers what cannot be seen.
//
// Only one such loop per process: two signalfds for SIGCHLD steal each other's signals,
// and a SIGCHLD handler of the selfpipe and sigaction backends would never run while the
// signal is blocked everywhere; core/sigchld_hub keeps these apart (EBUSY).
//
// Standard signals do not queue, so one record can stand for many exits and ssi_pid is
// only a hint: reaping is core/reaper's pid_reaper (hints, then a WNOWAIT peek), exactly
// as for selfpipe, and never waitpid(-1).
//
// The loop must be destroyed on the thread that made it: that thread's mask is the one to
// restore, and a thread cannot change another's.
//
// Linux: signalfd 2.6.22, its flags argument (signalfd4) 2.6.27; glibc 2.8.

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/child_watcher.hpp"
#include "core/error.hpp"
#include "core/pipe.hpp"
#include "core/reaper.hpp"
#include "core/sigchld_hub.hpp"
#include "core/unique_fd.hpp"
#include "sigchld_mask_linux.hpp"

namespace zreap::detail {

namespace {

constexpr const char* who = "zreap signalfd backend";

// Holds the process's one signalfd reservation of SIGCHLD for the watcher's life.
class signalfd_reservation {
  public:
    signalfd_reservation() { sigchld_reserve_for_signalfd(who); }
    ~signalfd_reservation() { sigchld_release_signalfd(); }
    signalfd_reservation(const signalfd_reservation&) = delete;
    signalfd_reservation& operator=(const signalfd_reservation&) = delete;
};

unique_fd make_sigchld_fd() {
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    unique_fd fd(::signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC));
    if (!fd)
        throw_errno(std::string(who) + ": signalfd");
    return fd;
}

class signalfd_watcher final : public child_watcher {
  public:
    // The members do the work in order, and unwind in reverse if a later step throws:
    // a refused loop leaves the mask, the handler, the reservation and the fds as it found
    // them. The rescue is subscribed before the threads are checked, so that no SIGCHLD can
    // slip through between a check that passed and the safety net.
    signalfd_watcher() : block_(who), fd_(make_sigchld_fd()), rescue_(who) {
        rescue_.subscribe_signalfd_rescue();
        rescue_fd_[0] = rescue_.fd();
        threads_.check_all();
    }

    int wake_fd() const noexcept override { return fd_.get(); }
    std::size_t direct_slots() const noexcept override { return 1; }
    const int* direct_fds() const noexcept override { return rescue_fd_; }

    void watch(pid_t pid, int, bool exited) override {
        // A thread made since the last check could take this child's SIGCHLD: refuse
        // before watching. Only new and unsettled threads are read (a /proc listing per
        // watch, plus ~25 us per such thread), so that watch stays cheap with many threads.
        threads_.check_new();
        reaper_.watch(pid, exited);
    }

    void unwatch(pid_t pid) noexcept override { reaper_.unwatch(pid); }

    bool wants_immediate_poll() noexcept override { return reaper_.has_hints(); }

    bool reap(const poll_result& r, std::vector<exit_status>& out, std::size_t max) override {
        // Read before reaping: a SIGCHLD after the read stays pending and keeps the
        // signalfd readable (or, on a thread that does not block it, writes the rescue
        // pipe again), so nothing is lost between the two.
        if (r.woken)
            drain();
        const bool rescued = r.direct_revents && r.direct_revents[0];
        if (rescued) {
            rescue_.take([this](pid_t pid) {
                ++rescued_;
                reaper_.hint(pid);
            });
        }
        return reaper_.reap(r.woken || rescued, out, max);
    }

    std::uint64_t rescued_signals() const noexcept override { return rescued_; }

  private:
    void drain() {
        signalfd_siginfo buf[16];  // 128 bytes each; a read needs room for at least one
        int err = drain_fd(fd_.get(), buf, sizeof buf, [&](std::size_t n) {
            for (std::size_t i = 0; i < n / sizeof(signalfd_siginfo); ++i)
                if (buf[i].ssi_signo == SIGCHLD)
                    reaper_.hint(static_cast<pid_t>(buf[i].ssi_pid));
        });
        if (err != 0)
            throw_errno(err, std::string(who) + ": read(signalfd)");
    }

    signalfd_reservation reservation_;
    sigchld_block_guard block_;
    unique_fd fd_;
    sigchld_pipe rescue_;
    int rescue_fd_[1] = {-1};
    sigchld_thread_check threads_{who};
    pid_reaper reaper_{who};
    std::uint64_t rescued_ = 0;
};

bool signalfd_usable() noexcept {
    return sigchld_disposition_problem() == nullptr;
}

std::unique_ptr<child_watcher> make_signalfd_watcher(const loop_options&) {
    // SIG_IGN or SA_NOCLDWAIT: the kernel reaps children itself, before anyone could.
    require_reapable_sigchld(who);
    return std::make_unique<signalfd_watcher>();
}

}  // namespace

extern const backend_entry signalfd_backend_entry{
    backend::signalfd, backend_capabilities(backend::signalfd), signalfd_usable,
    make_signalfd_watcher, sigchld_why_unusable};

}  // namespace zreap::detail
