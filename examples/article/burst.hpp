#pragma once

// A burst of simultaneous child exits, to compare how programs notice them
// (scripts/article-compare.sh runs pollchild --burst and the programs in this folder).
//
// The children block reading a pipe and _exit(0) together when the parent closes its end.
// After reporting, a program waits for EOF on its stdin, so that the script can count the
// zombies it left before it exits and init reaps them.

#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <system_error>
#include <vector>

namespace examples {

class exit_burst {
  public:
    // Forks @p n children, all waiting. The children call only close, read and _exit, so
    // the parent may already have other threads (libzmq's). Throws std::system_error.
    explicit exit_burst(std::size_t n) {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0)
            throw std::system_error(errno, std::generic_category(), "exit_burst: pipe2");
        gate_ = fds[1];
        for (std::size_t i = 0; i < n; ++i) {
            pid_t pid = ::fork();
            if (pid < 0) {
                int e = errno;
                release();
                ::close(fds[0]);
                throw std::system_error(e, std::generic_category(), "exit_burst: fork");
            }
            if (pid == 0) {
                ::close(fds[1]);
                char c;
                while (::read(fds[0], &c, 1) < 0 && errno == EINTR) {
                }
                ::_exit(0);
            }
            pids_.push_back(pid);
        }
        ::close(fds[0]);
    }
    ~exit_burst() { release(); }
    exit_burst(const exit_burst&) = delete;
    exit_burst& operator=(const exit_burst&) = delete;

    const std::vector<pid_t>& pids() const noexcept { return pids_; }

    // Lets every child exit at once.
    void release() noexcept {
        if (gate_ >= 0)
            ::close(gate_);
        gate_ = -1;
    }

  private:
    int gate_ = -1;
    std::vector<pid_t> pids_;
};

// "--burst N" as the only arguments; exits 2 with a usage line otherwise.
inline std::size_t burst_size(int argc, char** argv, const char* program) {
    std::string n = argc == 3 ? argv[2] : "";
    if (argc != 3 || std::string(argv[1]) != "--burst" || n.empty() || n.size() > 5 ||
        n.find_first_not_of("0123456789") != std::string::npos || std::atoi(n.c_str()) < 1) {
        std::fprintf(stderr, "usage: %s --burst N   (1 <= N <= 99999)\n", program);
        std::exit(2);
    }
    return static_cast<std::size_t>(std::atoi(n.c_str()));
}

// Prints the line the script reads, then waits for EOF on stdin.
inline void report_burst(const char* program, std::size_t n, unsigned long reported) {
    std::printf("%s: burst of %zu exits: %lu reported\n", program, n, reported);
    std::fflush(stdout);
    char buf[256];
    for (;;) {
        ssize_t r = ::read(0, buf, sizeof buf);
        if (r == 0 || (r < 0 && errno != EINTR))
            return;
    }
}

}  // namespace examples
