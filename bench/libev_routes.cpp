// The experiment behind the libev backend's design (docs/backends/libev.md): three ways
// of driving libev's ev_child from a zmq_poll loop, each under the same conditions, counted
// for lost wakeups and timed from "the child may exit now" to "its callback ran".
//
//   naive    libev's default pipe signal mode: libev's own SIGCHLD handler, libev's epoll
//            fd in the zmq_poll set (reached through an ev_embed watcher's field),
//            ev_run(EVRUN_NOWAIT) around each zmq_poll.
//   signalfd route (a): the same, but EVFLAG_SIGNALFD and SIGCHLD blocked in every thread.
//   zreap    route (b), the zreap libev backend: zreap's handler writes a pipe in the poll
//            set, then ev_feed_signal_event(SIGCHLD) + ev_run(EVRUN_NOWAIT).
//
// Usage: libev-routes VARIANT [TRIALS] [other-thread|same-thread]
// With other-thread (the default), the loop thread blocks SIGCHLD and a helper thread
// leaves it unblocked, so the handler runs away from the loop (for signalfd the helper
// blocks it too: that route requires it). With same-thread, no helper exists and the loop
// thread takes the signal itself. Each trial waits at most 1 s for an exit that happens
// at once; a wait that ends by timeout is a lost wakeup. Prints one summary line.

#include <ev.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <zreap/zreap.hpp>

namespace {

using clock_type = std::chrono::steady_clock;
constexpr int bound_ms = 1000;

// A child that exits as soon as the returned fd is closed.
pid_t gated_child(int& gate) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        std::abort();
    pid_t pid = fork();
    if (pid < 0)
        std::abort();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        close(fds[1]);
        char c;
        while (read(fds[0], &c, 1) < 0 && errno == EINTR) {
        }
        _exit(0);
    }
    close(fds[0]);
    gate = fds[1];
    return pid;
}

struct result {
    std::vector<double> latency_us;
    int lost = 0;
};

// Raw libev driven from zmq_poll over libev's backend fd (variants naive and signalfd).
void on_raw_child(struct ev_loop* l, ev_child* w, int) {
    ev_child_stop(l, w);
    *static_cast<bool*>(w->data) = true;
}

result run_raw(bool use_signalfd, int trials) {
    unsigned flags = EVBACKEND_EPOLL | EVFLAG_NOENV | (use_signalfd ? EVFLAG_SIGNALFD : 0);
    struct ev_loop* def = ev_default_loop(flags);
    // libev has no accessor for its epoll fd; ev_embed_start copies it into the embed
    // watcher's io member, the only way to reach it.
    struct ev_loop* outer = ev_loop_new(EVBACKEND_POLL | EVFLAG_NOENV);
    ev_embed embed;
    ev_embed_init(&embed, nullptr, def);
    ev_embed_start(outer, &embed);
    const int epfd = embed.io.fd;

    result r;
    for (int i = 0; i < trials; ++i) {
        int gate;
        pid_t pid = gated_child(gate);
        bool done = false;
        ev_child c;
        ev_child_init(&c, on_raw_child, pid, 0);
        c.data = &done;
        ev_child_start(def, &c);
        ev_run(def, EVRUN_NOWAIT);
        auto t0 = clock_type::now();
        close(gate);
        bool timed_out = false;
        while (!done) {
            ev_run(def, EVRUN_NOWAIT);
            if (done)
                break;
            zmq_pollitem_t item{nullptr, epfd, ZMQ_POLLIN, 0};
            int rc = zmq_poll(&item, 1, bound_ms);
            if (rc == 0)
                timed_out = true;
            ev_run(def, EVRUN_NOWAIT);
        }
        auto dt = std::chrono::duration<double, std::micro>(clock_type::now() - t0).count();
        r.latency_us.push_back(dt);
        if (timed_out)
            ++r.lost;
    }
    ev_embed_stop(outer, &embed);
    ev_loop_destroy(outer);
    ev_loop_destroy(def);
    return r;
}

result run_zreap(int trials) {
    zreap::loop lp(zreap::backend::libev);
    result r;
    for (int i = 0; i < trials; ++i) {
        int gate;
        pid_t pid = gated_child(gate);
        bool done = false;
        lp.watch_child(pid, [&](const zreap::exit_status&) { done = true; });
        lp.run_once(std::chrono::milliseconds(0));
        auto t0 = clock_type::now();
        close(gate);
        while (!done)
            lp.run_once(std::chrono::milliseconds(bound_ms));
        auto dt = std::chrono::duration<double, std::micro>(clock_type::now() - t0).count();
        r.latency_us.push_back(dt);
        if (dt >= bound_ms * 1000.0)
            ++r.lost;
    }
    return r;
}

double pct(std::vector<double> v, double p) {
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<std::size_t>(p * v.size()))];
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s naive|signalfd|zreap [TRIALS] [other-thread|same-thread]\n",
                     argv[0]);
        return 2;
    }
    const std::string variant = argv[1];
    const int trials = argc > 2 ? std::atoi(argv[2]) : 200;
    const bool other_thread = argc <= 3 || std::string(argv[3]) != "same-thread";

    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    std::thread helper;
    if (other_thread) {
        // The helper starts with the main thread's mask (SIGCHLD unblocked), then the main
        // thread blocks it: the kernel can deliver SIGCHLD only to the helper.
        const bool helper_blocks = variant == "signalfd";
        helper = std::thread([helper_blocks, chld] {
            if (helper_blocks)
                pthread_sigmask(SIG_BLOCK, &chld, nullptr);
            for (;;)
                pause();
        });
        helper.detach();
        pthread_sigmask(SIG_BLOCK, &chld, nullptr);
    }

    result r;
    if (variant == "naive")
        r = run_raw(false, trials);
    else if (variant == "signalfd")
        r = run_raw(true, trials);
    else if (variant == "zreap")
        r = run_zreap(trials);
    else
        return 2;

    std::printf("%-8s %-12s trials=%d lost=%d p50=%.0fus p99=%.0fus max=%.0fus\n", variant.c_str(),
                other_thread ? "other-thread" : "same-thread", trials, r.lost,
                pct(r.latency_us, 0.5), pct(r.latency_us, 0.99), pct(r.latency_us, 1.0));
    std::fflush(stdout);
    _exit(0);  // the helper thread never ends
}
