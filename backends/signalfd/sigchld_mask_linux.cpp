#include "sigchld_mask_linux.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>

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

// 1 if the status text says SIGCHLD is blocked, 0 if not, -1 if it has no SigBlk line.
int sigchld_blocked_in_status(const char* status) {
    const char* line = std::strstr(status, "\nSigBlk:");
    if (!line)
        return -1;
    // A hex mask, bit n-1 for signal n.
    unsigned long long mask = std::strtoull(line + 8, nullptr, 16);
    return (mask >> (SIGCHLD - 1)) & 1u ? 1 : 0;
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
    char path[64];
    char status[4096];
    for (pid_t tid : now) {
        if (only_new && std::binary_search(seen_.begin(), seen_.end(), tid))
            continue;
        std::snprintf(path, sizeof path, "/proc/self/task/%d/status", static_cast<int>(tid));
        // A thread that ended since the listing is no longer a place a signal can go.
        if (!read_small_file(path, status, sizeof status))
            continue;
        int blocked = sigchld_blocked_in_status(status);
        if (blocked < 0)
            throw_errno(ENOTSUP, std::string(who_) + ": no SigBlk line in " + path +
                                     ", cannot check that every thread blocks SIGCHLD");
        if (blocked)
            continue;
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
    seen_ = std::move(now);
}

}  // namespace zreap::detail
