#pragma once

// SIGINT and SIGTERM turned into a readable fd, so that a zreap loop hears them through
// add_fd like any other event instead of through an interrupted system call. Shared by the
// example programs; one per process.

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace examples {

class signal_pipe {
  public:
    // Installs the handlers for SIGINT and SIGTERM. Throws std::system_error.
    signal_pipe() {
        int fds[2];
        if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
            throw std::system_error(errno, std::generic_category(), "signal_pipe: pipe2");
        read_fd_ = fds[0];
        write_fd_ = fds[1];
        struct sigaction sa = {};
        sa.sa_handler = &on_signal;
        sigemptyset(&sa.sa_mask);
        // SA_RESTART: blocking calls elsewhere in the program (stdio) resume; zmq_poll
        // returns EINTR anyway and the loop retries it.
        sa.sa_flags = SA_RESTART;
        for (int i = 0; i < 2; ++i) {
            if (::sigaction(signals[i], &sa, &old_[i]) != 0) {
                int e = errno;
                restore(i);
                throw std::system_error(e, std::generic_category(), "signal_pipe: sigaction");
            }
        }
    }
    ~signal_pipe() {
        // Handlers first, then the fds: a late signal must never write to a closed (and
        // perhaps reused) descriptor.
        restore(2);
        int w = write_fd_;
        write_fd_ = -1;
        ::close(read_fd_);
        ::close(w);
    }
    signal_pipe(const signal_pipe&) = delete;
    signal_pipe& operator=(const signal_pipe&) = delete;

    // Readable once a signal has arrived.
    int fd() const noexcept { return read_fd_; }

    // Empties the pipe and returns the last signal number read, or 0.
    int take() noexcept {
        unsigned char buf[64];
        int last = 0;
        for (;;) {
            ssize_t n = ::read(read_fd_, buf, sizeof buf);
            if (n > 0) {
                last = buf[n - 1];
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            return last;
        }
    }

  private:
    static constexpr int signals[2] = {SIGINT, SIGTERM};
    // Read by the handler: sig_atomic_t, and volatile so the store order above holds.
    static inline volatile sig_atomic_t write_fd_ = -1;

    // Async-signal-safe: one write, errno saved. A full pipe is already readable, so
    // EAGAIN loses nothing.
    static void on_signal(int sig) {
        int saved = errno;
        unsigned char b = static_cast<unsigned char>(sig);
        int fd = write_fd_;
        if (fd >= 0)
            (void)!::write(fd, &b, 1);
        errno = saved;
    }

    void restore(int n) noexcept {
        for (int i = 0; i < n; ++i)
            ::sigaction(signals[i], &old_[i], nullptr);
    }

    int read_fd_ = -1;
    struct sigaction old_[2] = {};
};

}  // namespace examples
