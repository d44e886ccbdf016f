#include "sigchld_hub.hpp"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <mutex>
#include <string>

#include "child_watcher.hpp"
#include "error.hpp"

namespace zreap::detail {

namespace {

// Fixed-size and lock-free, because the handler can only read what needs no lock.
constexpr int max_slots = 256;

enum slot_state : int { free_slot = 0, reserved = 1, active = 2 };

struct slot {
    std::atomic<int> state{free_slot};
    int pipe_fd = -1;
    std::atomic<int>* flag = nullptr;
    sigchld_hints* hints = nullptr;
    std::atomic<pthread_t> thread{};
};

slot slots[max_slots];
std::atomic<int> slots_used{0};  // high-water mark, so the handler scans only that far
std::atomic<int> handlers_running{0};
std::atomic<int> forwarded{0};  // pthread_kill copies sent and not yet received

std::mutex hub_mutex;  // guards install/restore and slot reservation, never taken in the handler
int subscribers = 0;
const char* signalfd_owner = nullptr;  // who holds the signalfd reservation, if anyone
int rescue_slot = -1;                  // the reservation holder's rescue pipe, if subscribed
struct sigaction previous {};

void on_sigchld(int sig, siginfo_t* info, void* context) {
    const int saved_errno = errno;
    // seq_cst, with the slot state's load below and sigchld_unsubscribe()'s store and load:
    // either unsubscribe sees this handler running and waits, or this handler sees the slot
    // no longer active. With acquire/release alone, each side could miss the other's write.
    handlers_running.fetch_add(1, std::memory_order_seq_cst);
    // si_code > 0 (CLD_EXITED, CLD_KILLED, ...) means the kernel sent it about a child;
    // <= 0 means a process or thread sent it, pthread_kill forwarding included.
    const bool from_kernel = info && info->si_code > 0;
    pid_t pid = from_kernel ? info->si_pid : 0;
    const int n = slots_used.load(std::memory_order_acquire);
    for (int i = 0; i < n; ++i) {
        slot& s = slots[i];
        if (s.state.load(std::memory_order_seq_cst) != active)
            continue;
        if (s.pipe_fd >= 0) {
            ssize_t w = ::write(s.pipe_fd, &pid, sizeof pid);  // EAGAIN: already readable
            (void)w;
        } else if (s.flag) {
            // The pid before the flag: a subscriber that sees the flag sees the pid.
            if (pid > 0 && s.hints)
                s.hints->put(pid);
            // A read-modify-write, not a store: it continues the release sequence of a
            // handler on another thread that stored a hint and set the flag before it
            // forwarded the signal here, so the loop that takes the flag sees that hint.
            s.flag->exchange(1, std::memory_order_acq_rel);
            pthread_t t = s.thread.load(std::memory_order_relaxed);
            if (from_kernel && !pthread_equal(t, pthread_self())) {
                forwarded.fetch_add(1, std::memory_order_relaxed);
                if (pthread_kill(t, SIGCHLD) != 0)
                    forwarded.fetch_sub(1, std::memory_order_relaxed);
            }
        }
    }
    // Copied while the last unsubscribe still waits for this handler: once the count
    // drops, a new subscribe() may rewrite `previous`. Not called inside that section, so
    // a previous handler that never returns (siglongjmp) cannot hang unsubscribe().
    const struct sigaction prev = previous;
    handlers_running.fetch_sub(1, std::memory_order_release);
    // A copy we forwarded ourselves is not news to the application: its handler already
    // ran for the original. Everything else reaches the handler it had before zreap came.
    if (!from_kernel && info && info->si_pid == getpid()) {
        int n = forwarded.load(std::memory_order_relaxed);
        while (n > 0 && !forwarded.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) {
        }
        if (n > 0) {
            errno = saved_errno;
            return;
        }
    }
    if (prev.sa_flags & SA_SIGINFO) {
        if (prev.sa_sigaction)
            prev.sa_sigaction(sig, info, context);
    } else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN && prev.sa_handler) {
        prev.sa_handler(sig);
    }
    errno = saved_errno;
}

int subscribe(int pipe_fd, std::atomic<int>* flag, sigchld_hints* hints, pthread_t thread,
              const char* who, bool signalfd_rescue = false) {
    std::lock_guard<std::mutex> lock(hub_mutex);
    if (signalfd_rescue) {
        if (!signalfd_owner || rescue_slot >= 0)
            throw_errno(EBUSY,
                        std::string(who) + (signalfd_owner ? ": a rescue pipe is subscribed already"
                                                           : ": no signalfd reservation is held"));
    } else if (signalfd_owner) {
        throw_errno(EBUSY, std::string(who) + ": a loop using the " + signalfd_owner +
                               " blocks SIGCHLD in every thread and reads it itself; its "
                               "signal handler would never run");
    }
    if (subscribers == 0) {
        require_reapable_sigchld(who);
        struct sigaction sa {};
        sa.sa_sigaction = on_sigchld;
        sigemptyset(&sa.sa_mask);
        // SA_RESTART keeps the application's other blocking calls from failing with EINTR
        // (zmq_poll returns EINTR regardless); SA_NOCLDSTOP: stops are not exits.
        sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_NOCLDSTOP;
        struct sigaction old {};
        if (::sigaction(SIGCHLD, nullptr, &old) != 0)
            throw_errno(std::string(who) + ": sigaction(SIGCHLD)");
        previous = old;
        if (::sigaction(SIGCHLD, &sa, nullptr) != 0)
            throw_errno(std::string(who) + ": sigaction(SIGCHLD)");
    }
    for (int i = 0; i < max_slots; ++i) {
        int expected = free_slot;
        if (!slots[i].state.compare_exchange_strong(expected, reserved))
            continue;
        slots[i].pipe_fd = pipe_fd;
        slots[i].flag = flag;
        slots[i].hints = hints;
        slots[i].thread.store(thread, std::memory_order_relaxed);
        if (slots_used.load() <= i)
            slots_used.store(i + 1, std::memory_order_release);
        slots[i].state.store(active, std::memory_order_release);
        ++subscribers;
        if (signalfd_rescue)
            rescue_slot = i;
        return i;
    }
    if (subscribers == 0)
        ::sigaction(SIGCHLD, &previous, nullptr);
    throw_errno(EMFILE, std::string(who) + ": more than " + std::to_string(max_slots) +
                            " loops use a SIGCHLD handler backend at once");
}

}  // namespace

sigchld_hints::sigchld_hints() noexcept {
    for (auto& e : entries_)
        e.store(0, std::memory_order_relaxed);
}

bool sigchld_hints::put(pid_t pid) noexcept {
    for (auto& e : entries_) {
        // The load first: a full entry costs a read, not a locked write.
        pid_t empty = 0;
        if (e.load(std::memory_order_relaxed) == 0 &&
            e.compare_exchange_strong(empty, pid, std::memory_order_release,
                                      std::memory_order_relaxed))
            return true;
    }
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return false;
}

std::size_t sigchld_hints::take(pid_t* out, std::size_t max) noexcept {
    std::size_t n = 0;
    for (auto& e : entries_) {
        if (n == max)
            break;
        // Only entries seen full are exchanged: an empty one needs no locked write.
        if (e.load(std::memory_order_relaxed) == 0)
            continue;
        pid_t pid = e.exchange(0, std::memory_order_acquire);
        if (pid != 0)
            out[n++] = pid;
    }
    return n;
}

sigchld_pipe::sigchld_pipe(const char* who) : who_(who), pipe_(make_cloexec_pipe(true, who)) {}

sigchld_pipe::~sigchld_pipe() {
    if (slot_ >= 0)
        sigchld_unsubscribe(slot_);
}

void sigchld_pipe::subscribe() {
    if (slot_ < 0)
        slot_ = sigchld_subscribe_pipe(pipe_.write.get(), who_);
}

void sigchld_pipe::subscribe_signalfd_rescue() {
    if (slot_ < 0)
        slot_ = sigchld_subscribe_signalfd_rescue(pipe_.write.get(), who_);
}

int sigchld_subscribe_pipe(int write_fd, const char* who) {
    return subscribe(write_fd, nullptr, nullptr, pthread_t{}, who);
}

int sigchld_subscribe_signalfd_rescue(int write_fd, const char* who) {
    return subscribe(write_fd, nullptr, nullptr, pthread_t{}, who, true);
}

int sigchld_subscribe_flag(std::atomic<int>* flag, sigchld_hints* hints, pthread_t thread,
                           const char* who) {
    return subscribe(-1, flag, hints, thread, who);
}

void sigchld_set_thread(int slot_index, pthread_t thread) noexcept {
    slots[slot_index].thread.store(thread, std::memory_order_relaxed);
}

void sigchld_reserve_for_signalfd(const char* who) {
    std::lock_guard<std::mutex> lock(hub_mutex);
    if (signalfd_owner)
        throw_errno(EBUSY, std::string(who) + ": a loop in this process (" + signalfd_owner +
                               ") already reads SIGCHLD from a signalfd; two signalfds would "
                               "steal each other's signals");
    if (subscribers > 0)
        throw_errno(EBUSY, std::string(who) + ": " + std::to_string(subscribers) +
                               " loop(s) of a signal-handler backend (selfpipe, sigaction) "
                               "are alive; with SIGCHLD blocked their handler would never run");
    signalfd_owner = who;
}

void sigchld_release_signalfd() noexcept {
    std::lock_guard<std::mutex> lock(hub_mutex);
    signalfd_owner = nullptr;
}

void sigchld_unsubscribe(int slot_index) noexcept {
    std::lock_guard<std::mutex> lock(hub_mutex);
    slot& s = slots[slot_index];
    s.state.store(reserved, std::memory_order_seq_cst);
    // A handler that loaded the slot before the store above may still be using its fd,
    // flag or hints; wait until every running handler is done. Handlers never block, so
    // this is short, and it cannot be this thread's own handler (that would have finished
    // first). seq_cst: see on_sigchld().
    while (handlers_running.load(std::memory_order_seq_cst) != 0)
        sched_yield();
    s.pipe_fd = -1;
    s.flag = nullptr;
    s.hints = nullptr;
    s.state.store(free_slot, std::memory_order_release);
    if (slot_index == rescue_slot)
        rescue_slot = -1;
    if (--subscribers == 0)
        ::sigaction(SIGCHLD, &previous, nullptr);
}

}  // namespace zreap::detail
