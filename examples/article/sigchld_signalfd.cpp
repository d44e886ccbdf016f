// The article's signalfd version, reduced to what scripts/article-compare.sh measures:
// SIGCHLD is blocked and read from a signalfd in the zmq_poll items; each signalfd_siginfo
// read counts as "a child terminated". As in the article, nothing calls waitpid and
// nothing reads the REP socket.
//
//   article-sigchld-signalfd --burst N
//
// Written to show what goes wrong, not as a pattern to follow: SIGCHLD is a standard
// signal, so exits that arrive while one is pending merge into it and the signalfd yields
// one siginfo for them all; and every child stays a zombie. examples/pollchild is the
// program done right (zreap's signalfd backend reaps in a loop after each read).

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <cstdio>

#include "burst.hpp"

int main(int argc, char** argv) {
    const char* name = "article-sigchld-signalfd";
    std::size_t n = examples::burst_size(argc, argv, name);
    // Blocked before libzmq starts its threads, so that they inherit the mask.
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    if (::sigprocmask(SIG_BLOCK, &chld, nullptr) != 0) {
        std::perror("sigprocmask");
        return 1;
    }
    int sfd = ::signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) {
        std::perror("signalfd");
        return 1;
    }
    void* ctx = zmq_ctx_new();
    void* rep = zmq_socket(ctx, ZMQ_REP);
    zmq_bind(rep, "inproc://article");

    examples::exit_burst burst(n);
    burst.release();
    unsigned long reported = 0;
    for (;;) {
        zmq_pollitem_t items[] = {{rep, 0, ZMQ_POLLIN, 0}, {nullptr, sfd, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(items, 2, 1000);
        if (rc < 0 && zmq_errno() == EINTR)
            continue;
        if (rc <= 0)
            break;  // a quiet second (or an error): the burst is over
        if (items[1].revents & ZMQ_POLLIN) {
            signalfd_siginfo info;
            while (::read(sfd, &info, sizeof info) == static_cast<ssize_t>(sizeof info))
                ++reported;
        }
    }
    examples::report_burst(name, n, reported);
    zmq_close(rep);
    zmq_ctx_term(ctx);
    ::close(sfd);
    return 0;
}
