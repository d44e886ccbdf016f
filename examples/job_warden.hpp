#pragma once

// A helper process that ends the jobs' process groups when the job server dies without
// ending them itself (kill -9, a crash, the OOM killer).
//
// On Linux each job leader also gets SIGKILL from the kernel when the server dies
// (spawn_options::parent_death_signal), but only the leader: whatever the job started
// itself (`sh -c 'sleep 100; echo done'` forks the sleep) would live on. The warden closes
// that gap. The server tells it, over a socket pair, which process groups are live; when
// the server's end closes, which the kernel does for a process that dies in any way, the
// warden sends SIGKILL to each group still listed and exits.
//
// A group is listed from its spawn until its leader's exit is handled. While listed, its
// leader is unreaped, so its pid (the group id) cannot have been given to another process.
// Only in the moment between the leader's reap and the exit callback that unlists it could
// a server crash make the warden signal a group id that the kernel has given out again,
// which needs a pid wraparound within that moment.

#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <set>
#include <system_error>

namespace examples {

class job_warden {
  public:
    // Forks the warden. Call it while the process has a single thread (before zmq_ctx_new):
    // the warden runs on in the forked copy, without exec. Throws std::system_error.
    job_warden() {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
            throw std::system_error(errno, std::generic_category(), "job_warden: socketpair");
        // Every signal blocked around fork: until the warden has set its own dispositions, a
        // signal would run the server's handlers in it (which write to the server's pipes).
        sigset_t all, saved;
        sigfillset(&all);
        ::sigprocmask(SIG_SETMASK, &all, &saved);
        pid_ = ::fork();
        if (pid_ == 0) {
            ::close(sv[0]);
            run(sv[1]);
        }
        int e = errno;
        ::sigprocmask(SIG_SETMASK, &saved, nullptr);
        if (pid_ < 0) {
            ::close(sv[0]);
            ::close(sv[1]);
            throw std::system_error(e, std::generic_category(), "job_warden: fork");
        }
        ::close(sv[1]);
        fd_ = sv[0];
    }
    // Closes the server's end: the warden kills the groups still listed (none after a clean
    // shutdown) and exits, and is reaped here unless lost() said it is gone already.
    ~job_warden() {
        ::close(fd_);
        if (alive_) {
            while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
            }
        }
    }
    job_warden(const job_warden&) = delete;
    job_warden& operator=(const job_warden&) = delete;

    pid_t pid() const noexcept { return pid_; }
    // The warden has exited and been reaped by someone else (the loop that watched it).
    void lost() noexcept { alive_ = false; }
    bool alive() const noexcept { return alive_; }

    // List or unlist a process group. Never blocks; false if the record could not be sent
    // (the warden is gone or not reading), in which case the group is not protected.
    bool track(pid_t pgid) noexcept { return send(static_cast<std::int32_t>(pgid)); }
    bool untrack(pid_t pgid) noexcept { return send(-static_cast<std::int32_t>(pgid)); }

  private:
    bool send(std::int32_t record) noexcept {
        if (!alive_)
            return false;
        for (;;) {
            // MSG_NOSIGNAL: a warden that died must not kill the server with SIGPIPE.
            ssize_t n = ::send(fd_, &record, sizeof record, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n == static_cast<ssize_t>(sizeof record))
                return true;
            if (n < 0 && errno == EINTR)
                continue;
            return false;
        }
    }

    [[noreturn]] static void run(int fd) noexcept {
        // A group of its own, so that a Ctrl-C at the terminal (sent to the server's
        // foreground group) does not reach it, and deaf to the signals that ask the server
        // to stop: the server shuts down gracefully, then closes the socket.
        ::setpgid(0, 0);
        for (int sig = 1; sig < NSIG; ++sig) {
            if (sig != SIGKILL && sig != SIGSTOP)
                ::signal(sig, SIG_DFL);
        }
        for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1, SIGUSR2})
            ::signal(sig, SIG_IGN);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        long max_fd = ::sysconf(_SC_OPEN_MAX);
        if (max_fd < 0 || max_fd > 65536)
            max_fd = 65536;
        for (int f = 0; f < max_fd; ++f) {
            if (f != fd && f != STDERR_FILENO)
                ::close(f);
        }
        std::set<pid_t> groups;
        std::int32_t buf[256];
        std::size_t have = 0;  // bytes in buf
        for (;;) {
            ssize_t n = ::recv(fd, reinterpret_cast<char*>(buf) + have, sizeof buf - have, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            have += static_cast<std::size_t>(n);
            std::size_t whole = have / sizeof buf[0];
            for (std::size_t i = 0; i < whole; ++i) {
                if (buf[i] > 0)
                    groups.insert(buf[i]);
                else
                    groups.erase(-buf[i]);
            }
            std::size_t rest = have % sizeof buf[0];
            if (rest)
                std::memmove(buf, reinterpret_cast<char*>(buf) + whole * sizeof buf[0], rest);
            have = rest;
        }
        int killed = 0;
        for (pid_t g : groups)
            killed += ::kill(-g, SIGKILL) == 0;
        if (killed)
            std::fprintf(stderr, "jobserver warden: the server is gone; killed %d job group%s\n",
                         killed, killed == 1 ? "" : "s");
        ::_exit(0);
    }

    int fd_ = -1;
    pid_t pid_ = -1;
    bool alive_ = true;
};

}  // namespace examples
