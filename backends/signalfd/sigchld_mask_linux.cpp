#include "sigchld_mask_linux.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>

#include "error.hpp"
#include "unique_fd.hpp"

namespace zreap::detail {

sigchld_block_guard::sigchld_block_guard(const char* who) : thread_(pthread_self()) {
    sigset_t chld, old;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    if (int err = pthread_sigmask(SIG_BLOCK, &chld, &old); err != 0)
        throw_errno(err, std::string(who) + ": pthread_sigmask(SIG_BLOCK, SIGCHLD)");
    was_blocked_ = sigismember(&old, SIGCHLD) == 1;
}

sigchld_block_guard::~sigchld_block_guard() {
    if (was_blocked_ || !pthread_equal(thread_, pthread_self()))
        return;
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    // A SIGCHLD still pending is delivered here: discarded under the default disposition,
    // or run by the application's handler, which then learns of exits it missed meanwhile.
    pthread_sigmask(SIG_UNBLOCK, &chld, nullptr);
}

namespace {

// Reads all of a small /proc file into @p buf (NUL-terminated); false if it is gone.
bool read_small_file(const char* path, char* buf, std::size_t size) {
    unique_fd fd(::open(path, O_RDONLY | O_CLOEXEC));
    if (!fd)
        return false;
    std::size_t len = 0;
    while (len + 1 < size) {
        ssize_t n = ::read(fd.get(), buf + len, size - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += static_cast<std::size_t>(n);
    }
    buf[len] = '\0';
    return len > 0;
}

// The low 64 bits of the SigBlk mask in the status text (bit n-1 for signal n), in @p mask;
// false if there is no SigBlk line. The kernel prints _NSIG bits in hex, most significant
// first: 16 digits on most architectures, more on a few (MIPS: 128 signals).
bool sigblk_in_status(const char* status, std::uint64_t& mask) {
    const char* line = std::strstr(status, "\nSigBlk:");
    if (!line)
        return false;
    const char* p = line + 8;
    while (*p == ' ' || *p == '\t')
        ++p;
    const char* end = p;
    while (std::isxdigit(static_cast<unsigned char>(*end)))
        ++end;
    if (end == p)
        return false;
    mask = 0;
    for (const char* d = end - std::min<std::ptrdiff_t>(end - p, 16); d < end; ++d) {
        const int c = std::tolower(static_cast<unsigned char>(*d));
        mask = mask << 4 | static_cast<std::uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    return true;
}

constexpr std::uint64_t bit(int sig) {
    return std::uint64_t{1} << (sig - 1);
}

// Every signal blocked that can be, libc's internal ones included: a thread being created
// (see sigchld_thread_check). SIGKILL and SIGSTOP never show as blocked.
bool being_created(std::uint64_t mask) {
    return (mask | bit(SIGKILL) | bit(SIGSTOP)) == ~std::uint64_t{0};
}

}  // namespace

void sigchld_thread_check::check(bool only_new) {
    std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir("/proc/self/task"), ::closedir);
    if (!dir)
        throw_errno(std::string(who_) +
                    ": cannot read /proc/self/task to check that every thread blocks SIGCHLD");
    // syscall rather than gettid(), which glibc only wraps since 2.30.
    const pid_t self = static_cast<pid_t>(::syscall(SYS_gettid));
    std::vector<pid_t> now;
    while (dirent* e = ::readdir(dir.get())) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        pid_t tid = static_cast<pid_t>(std::atoi(e->d_name));
        if (tid != self)
            now.push_back(tid);
    }
    std::sort(now.begin(), now.end());
    // Built aside and kept only if no thread is refused, so that a refused thread is read
    // again next time.
    std::vector<pid_t> recorded;
    std::vector<unsettled_thread> unsettled;
    std::optional<std::chrono::steady_clock::time_point> clock_now;  // read when first needed
    char path[64];
    char status[4096];
    for (pid_t tid : now) {
        auto was = std::lower_bound(unsettled_.begin(), unsettled_.end(), tid,
                                    [](const unsettled_thread& u, pid_t t) { return u.tid < t; });
        const bool was_unsettled = was != unsettled_.end() && was->tid == tid;
        if (only_new && !was_unsettled && std::binary_search(seen_.begin(), seen_.end(), tid)) {
            recorded.push_back(tid);
            continue;
        }
        std::snprintf(path, sizeof path, "/proc/self/task/%d/status", static_cast<int>(tid));
        // A thread that ended since the listing is no longer a place a signal can go.
        if (!read_small_file(path, status, sizeof status))
            continue;
        std::uint64_t mask = 0;
        if (!sigblk_in_status(status, mask))
            throw_errno(ENOTSUP, std::string(who_) + ": no SigBlk line in " + path +
                                     ", cannot check that every thread blocks SIGCHLD");
        if (being_created(mask)) {
            if (!clock_now)
                clock_now = std::chrono::steady_clock::now();
            const auto first = was_unsettled ? was->first_seen : *clock_now;
            if (*clock_now - first >= settle_window)
                recorded.push_back(tid);  // blocks everything for good
            else
                unsettled.push_back({tid, first});
            continue;
        }
        if (mask & bit(SIGCHLD)) {
            recorded.push_back(tid);
            continue;
        }
        std::string name;
        std::snprintf(path, sizeof path, "/proc/self/task/%d/comm", static_cast<int>(tid));
        char comm[64];
        if (read_small_file(path, comm, sizeof comm)) {
            name = comm;
            if (!name.empty() && name.back() == '\n')
                name.pop_back();
        }
        throw_errno(EINVAL,
                    std::string(who_) + ": thread " + std::to_string(tid) +
                        (name.empty() ? "" : " (\"" + name + "\")") +
                        " leaves SIGCHLD unblocked, so the kernel can deliver a child's SIGCHLD "
                        "there and the signalfd would never see it; block SIGCHLD "
                        "(pthread_sigmask) in every thread, for instance by making the loop "
                        "before other threads, which then inherit the blocked mask, or use "
                        "another backend");
    }
    seen_ = std::move(recorded);
    unsettled_ = std::move(unsettled);
}

}  // namespace zreap::detail
