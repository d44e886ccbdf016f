#pragma once

// Children for the tests, made with fork() and _exit(): nothing but async-signal-safe
// calls runs in them, so forking from the multi-threaded test process is safe.

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

#include <zreap/zreap.hpp>

namespace zreap_test {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

/// Forks a child that runs @p body and _exits with its return value. The child keeps only
/// stdio and @p keep_fd: a gate pipe's write end must not survive in other children, or
/// closing it in the parent would not let the gated child go.
template <typename F>
pid_t fork_child(F body, int keep_fd = -1) {
    pid_t pid = ::fork();
    if (pid < 0)
        throw std::runtime_error("fork failed");
    if (pid == 0) {
        if (keep_fd > 3)
            ::close_range(3, static_cast<unsigned>(keep_fd - 1), 0);
        if (keep_fd != 3)
            ::close_range(keep_fd < 3 ? 3u : static_cast<unsigned>(keep_fd + 1), ~0u, 0);
        else
            ::close_range(4, ~0u, 0);
        // Unblock SIGCHLD and any other signal the test process blocked: the children of
        // the tests behave like ordinary programs.
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        ::_exit(body());
    }
    return pid;
}

/// Blocks until a byte, or end of file, can be read from @p rd (the read end of a gate pipe).
/// Async-signal-safe: children forked from the threaded test process call it.
inline void await_gate(int rd) {
    char c;
    while (::read(rd, &c, 1) < 0 && errno == EINTR) {
    }
}

/// A child that exits with @p code once it reads a byte, or end of file, from @p rd: the read
/// end of a gate pipe, the only fd it keeps besides stdio.
inline pid_t gate_reader(int rd, int code = 0) {
    return fork_child(
        [rd, code] {
            await_gate(rd);
            return code;
        },
        rd);
}

/// A child that exits with @p code at once.
inline pid_t exit_now(int code) {
    return fork_child([code] { return code; });
}

/// A child that kills itself with @p sig.
inline pid_t die_by(int sig) {
    return fork_child([sig] {
        struct rlimit no_core {
            0, 0
        };
        if (sig == SIGABRT || sig == SIGSEGV || sig == SIGQUIT)
            setrlimit(RLIMIT_CORE, &no_core);
        signal(sig, SIG_DFL);
        ::kill(::getpid(), sig);
        return 99;
    });
}

/// A child that waits until the gate is opened (or closed), then exits with @p code.
/// The test decides exactly when the exit happens, without sleeping.
class gated_child {
  public:
    explicit gated_child(int code = 0) {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0)
            throw std::runtime_error("pipe2 failed");
        int rd = fds[0];
        pid_ = gate_reader(rd, code);
        ::close(rd);
        write_ = fds[1];
    }
    ~gated_child() { open(); }
    gated_child(const gated_child&) = delete;
    gated_child& operator=(const gated_child&) = delete;
    pid_t pid() const { return pid_; }
    /// Lets the child exit.
    void open() {
        if (write_ >= 0)
            ::close(write_);
        write_ = -1;
    }

  private:
    pid_t pid_ = -1;
    int write_ = -1;
};

/// Children that wait on one shared gate, each exiting with the code it was added with:
/// each byte written lets exactly one of them (whichever reads it) go, and open() lets all
/// the others go at once.
struct gated_group {
    int gate[2] = {-1, -1};
    std::map<pid_t, int> codes;

    gated_group() {
        if (::pipe2(gate, O_CLOEXEC) != 0)
            throw std::runtime_error("pipe2 failed");
    }
    ~gated_group() {
        open();
        if (gate[0] >= 0)
            ::close(gate[0]);
    }
    gated_group(const gated_group&) = delete;
    gated_group& operator=(const gated_group&) = delete;
    pid_t add(int code) {
        pid_t pid = gate_reader(gate[0], code);
        codes[pid] = code;
        return pid;
    }
    /// Lets one child go; false if the byte could not be written.
    bool let_one_go() { return ::write(gate[1], "x", 1) == 1; }
    /// Lets every child still waiting go.
    void open() {
        if (gate[1] >= 0)
            ::close(gate[1]);
        gate[1] = -1;
    }
};

/// A thread that only waits, and unblocks SIGCHLD when unblock_sigchld() is called. It
/// starts with its creator's mask, then runs @p first (if given) in itself; the constructor
/// returns once it has, so that the thread is past its creation (glibc blocks every signal
/// in a thread being created) and its mask is the one the test meant.
class mask_thread {
  public:
    explicit mask_thread(std::function<void()> first = {}) {
        thread_ = std::thread([this, first] {
            if (first)
                first();
            std::unique_lock<std::mutex> lock(m_);
            tid_ = static_cast<pid_t>(::syscall(SYS_gettid));
            cv_.notify_all();
            cv_.wait(lock, [this] { return unblock_; });
            sigset_t chld;
            sigemptyset(&chld);
            sigaddset(&chld, SIGCHLD);
            pthread_sigmask(SIG_UNBLOCK, &chld, nullptr);
            unblocked_ = true;
            cv_.notify_all();
            cv_.wait(lock, [this] { return quit_; });
        });
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [this] { return tid_ != 0; });
    }
    ~mask_thread() {
        {
            std::lock_guard<std::mutex> lock(m_);
            unblock_ = quit_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }
    mask_thread(const mask_thread&) = delete;
    mask_thread& operator=(const mask_thread&) = delete;
    pid_t tid() const { return tid_; }
    /// Returns once the thread has unblocked SIGCHLD.
    void unblock_sigchld() {
        std::unique_lock<std::mutex> lock(m_);
        unblock_ = true;
        cv_.notify_all();
        cv_.wait(lock, [this] { return unblocked_; });
    }

  private:
    std::mutex m_;
    std::condition_variable cv_;
    std::thread thread_;
    pid_t tid_ = 0;
    bool unblock_ = false, unblocked_ = false, quit_ = false;
};

/// Waits (without reaping) until @p pid is a zombie.
inline void wait_until_zombie(pid_t pid) {
    siginfo_t si{};
    while (::waitid(P_PID, static_cast<id_t>(pid), &si, WEXITED | WNOWAIT) < 0 && errno == EINTR) {
    }
}

/// Runs @p lp until @p done() or @p bound has passed; true if done() became true.
inline bool run_until(zreap::loop& lp, const std::function<bool()>& done,
                      std::chrono::milliseconds bound = std::chrono::seconds(20)) {
    auto end = clock_type::now() + bound;
    while (!done()) {
        if (clock_type::now() >= end)
            return false;
        lp.run_once(100ms);
    }
    return true;
}

/// Watches @p pid and runs @p lp until its exit is reported or @p bound has passed; the
/// reported status, or one with pid 0 if none came in time.
inline zreap::exit_status watch_until_reported(
    zreap::loop& lp, pid_t pid, std::chrono::milliseconds bound = std::chrono::seconds(20)) {
    // Shared: if the exit comes late, the callback may still run after this returns.
    auto seen = std::make_shared<zreap::exit_status>();
    lp.watch_child(pid, [seen](const zreap::exit_status& s) { *seen = s; });
    run_until(
        lp, [&] { return seen->pid != 0; }, bound);
    return *seen;
}

/// The fds open in this process now.
inline std::set<int> open_fds() {
    std::set<int> fds;
    DIR* d = ::opendir("/proc/self/fd");
    if (!d)
        return fds;
    int self = ::dirfd(d);
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        int fd = std::atoi(e->d_name);
        if (fd != self)
            fds.insert(fd);
    }
    ::closedir(d);
    return fds;
}

/// Runs @p body in a forked child, so that what it does to the process (a seccomp filter, a
/// setuid) dies with it. @p body returns "" for success or what went wrong; the text comes
/// back through a pipe. Returns "" or the failure, including a crash or a hang (the child
/// is killed after @p bound).
inline std::string in_forked_child(const std::function<std::string()>& body,
                                   std::chrono::seconds bound = std::chrono::seconds(60)) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
        return "pipe2 failed";
    pid_t pid = ::fork();
    if (pid < 0)
        return "fork failed";
    if (pid == 0) {
        ::close(fds[0]);
        std::string out;
        try {
            out = body();
        } catch (const std::exception& e) {
            out = std::string("exception: ") + e.what();
        }
        ssize_t w = ::write(fds[1], out.data(), out.size());
        (void)w;
        ::_exit(out.empty() ? 0 : 1);
    }
    ::close(fds[1]);
    // Read until EOF (the child's exit), with a bound against a hang.
    std::string text;
    auto end = clock_type::now() + bound;
    for (;;) {
        struct pollfd p {
            fds[0], POLLIN, 0
        };
        int left = static_cast<int>(
            std::chrono::duration_cast<std::chrono::milliseconds>(end - clock_type::now()).count());
        int ready = left > 0 ? ::poll(&p, 1, left) : 0;
        if (ready < 0)
            continue;  // EINTR
        if (ready == 0) {
            ::kill(pid, SIGKILL);
            text += " [killed: hung]";
            break;
        }
        char buf[512];
        ssize_t n = ::read(fds[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        text.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fds[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFSIGNALED(status))
        return text + " [child killed by signal " + std::to_string(WTERMSIG(status)) + "]";
    if (WEXITSTATUS(status) != 0 && text.empty())
        return "child exited " + std::to_string(WEXITSTATUS(status));
    return text;
}

#define CHILD_CHECK(cond)                                                             \
    do {                                                                              \
        if (!(cond))                                                                  \
            return std::string(__FILE__ ":") + std::to_string(__LINE__) + ": " #cond; \
    } while (0)

/// True while @p pid is a live process: not gone, not a zombie (from /proc/PID/stat).
inline bool process_alive(pid_t pid) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
    FILE* f = std::fopen(path, "r");
    if (!f)
        return false;
    char buf[512] = {};
    std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    const char* close_paren = std::strrchr(buf, ')');
    return n > 0 && close_paren && close_paren[1] == ' ' && close_paren[2] != 'Z' &&
           close_paren[2] != 'X';
}

/// Waits, with a bound, until @p pid is no longer a live process; true if it went.
inline bool gone_within(pid_t pid, std::chrono::milliseconds bound) {
    const auto until = clock_type::now() + bound;
    while (process_alive(pid) && clock_type::now() < until)
        ::usleep(1000);
    return !process_alive(pid);
}

/// Reaps every child of this process that has exited; returns how many.
inline int reap_leftovers() {
    int n = 0;
    while (::waitpid(-1, nullptr, WNOHANG) > 0)
        ++n;
    return n;
}

}  // namespace zreap_test
