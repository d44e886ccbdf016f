// The article's signal version, reduced to what scripts/article-compare.sh measures: a
// SIGCHLD handler sets a flag; the signal interrupts zmq_poll, which returns -1 with EINTR,
// and the loop then checks the flag and counts "a child terminated". As in the article,
// nothing calls waitpid and nothing reads the REP socket.
//
//   article-sigchld-flag --burst N
//
// Written to show what goes wrong, not as a pattern to follow: several exits set the one
// flag once, a SIGCHLD that lands in one of libzmq's threads interrupts no zmq_poll of
// ours, and every child stays a zombie. examples/pollchild is the program done right.

#include <signal.h>
#include <zmq.h>

#include <cerrno>
#include <cstdio>

#include "burst.hpp"

namespace {

volatile sig_atomic_t child_exited = 0;

// Touches nothing but the flag (no errno either).
void on_sigchld(int) {
    child_exited = 1;
}

}  // namespace

int main(int argc, char** argv) {
    const char* name = "article-sigchld-flag";
    std::size_t n = examples::burst_size(argc, argv, name);
    struct sigaction sa = {};
    sa.sa_handler = &on_sigchld;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: the signal is to interrupt zmq_poll
    if (::sigaction(SIGCHLD, &sa, nullptr) != 0) {
        std::perror("sigaction");
        return 1;
    }
    void* ctx = zmq_ctx_new();
    void* rep = zmq_socket(ctx, ZMQ_REP);
    zmq_bind(rep, "inproc://article");

    examples::exit_burst burst(n);
    burst.release();
    unsigned long reported = 0;
    for (;;) {
        zmq_pollitem_t items[] = {{rep, 0, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(items, 1, 1000);
        if (rc < 0 && zmq_errno() == EINTR) {
            if (child_exited) {
                child_exited = 0;
                ++reported;
            }
            continue;
        }
        if (rc <= 0)
            break;  // a quiet second (or an error): the burst is over
    }
    examples::report_burst(name, n, reported);
    zmq_close(rep);
    zmq_ctx_term(ctx);
    return 0;
}
