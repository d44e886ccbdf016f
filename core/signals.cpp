#include "signals.hpp"

#include <sched.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <mutex>
#include <string>

#include "error.hpp"
#include "wake.hpp"

namespace zreap::detail {

namespace {

// Larger than any system's signal count (Linux: 64, the BSDs and macOS: 32, illumos: 73).
constexpr int table_size = 128;

struct entry {
    std::atomic<int> wake_fd{-1};
    std::atomic<bool> arrived{false};
    const void* owner = nullptr;  // guarded by table_mutex
    struct sigaction previous {};
};

entry table[table_size];
std::atomic<int> handlers_running{0};
std::mutex table_mutex;  // claims and releases; never taken in the handler

void on_signal(int signo) {
    const int saved = errno;
    // seq_cst with release_signal(): either it sees this handler running and waits, or this
    // handler sees the fd gone.
    handlers_running.fetch_add(1, std::memory_order_seq_cst);
    if (signo > 0 && signo < table_size) {
        entry& e = table[signo];
        const int fd = e.wake_fd.load(std::memory_order_seq_cst);
        if (fd >= 0) {
            // The record before the wake-up: a loop woken by this write sees it.
            e.arrived.store(true, std::memory_order_release);
            wake_channel::notify_fd_write(fd);
        }
    }
    handlers_running.fetch_sub(1, std::memory_order_release);
    errno = saved;
}

const char* refusal(int signo) {
    if (signo <= 0 || signo >= table_size)
        return "is not a signal number";
    switch (signo) {
        case SIGCHLD:
            return "is zreap's own: watch children with watch_child() or spawn()";
        case SIGKILL:
        case SIGSTOP:
            return "cannot be caught";
        case SIGSEGV:
        case SIGBUS:
        case SIGFPE:
        case SIGILL:
#ifdef SIGTRAP
        case SIGTRAP:
#endif
#ifdef SIGSYS
        case SIGSYS:
#endif
            return "is raised by faults; a handler that returns would fault again";
        default:
            return nullptr;
    }
}

}  // namespace

void claim_signal(int signo, const void* owner, int wake_fd) {
    const std::string what = "zreap::loop::add_signal(" + std::to_string(signo) + ")";
    if (const char* why = refusal(signo))
        throw_errno(EINVAL, what + ": the signal " + why);
    std::lock_guard<std::mutex> lock(table_mutex);
    entry& e = table[signo];
    if (e.owner == owner)
        throw_errno(EEXIST, what + ": this loop handles the signal already");
    if (e.owner)
        throw_errno(EBUSY, what + ": another loop in this process handles the signal");
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    // SA_RESTART: the program's other blocking calls keep going (zmq_poll returns EINTR
    // regardless, and the loop goes round again).
    sa.sa_flags = SA_RESTART;
    e.arrived.store(false, std::memory_order_relaxed);
    e.wake_fd.store(wake_fd, std::memory_order_seq_cst);
    if (::sigaction(signo, &sa, &e.previous) != 0) {
        const int err = errno;
        e.wake_fd.store(-1, std::memory_order_seq_cst);
        throw_errno(err, what + ": sigaction");
    }
    e.owner = owner;
}

void release_signal(int signo) noexcept {
    if (signo <= 0 || signo >= table_size)
        return;
    std::lock_guard<std::mutex> lock(table_mutex);
    entry& e = table[signo];
    if (!e.owner)
        return;
    ::sigaction(signo, &e.previous, nullptr);
    e.wake_fd.store(-1, std::memory_order_seq_cst);
    // A handler that loaded the fd before the store above may still be writing to it.
    while (handlers_running.load(std::memory_order_seq_cst) != 0)
        sched_yield();
    e.owner = nullptr;
    e.arrived.store(false, std::memory_order_relaxed);
}

bool take_signal(int signo) noexcept {
    return signo > 0 && signo < table_size &&
           table[signo].arrived.exchange(false, std::memory_order_acquire);
}

}  // namespace zreap::detail
