// The program of the article "ZeroMQ: poll() and wait for child process", written with
// zreap: a parent answers requests on a ZMQ_REP socket while it keeps exactly one child
// alive, starting the next one each time the current one exits. docs/examples.md walks
// through it and maps each step to the article.
//
//   pollchild [--backend NAME] [--endpoint EP] [--sleep MIN_MS MAX_MS] [--fast]
//             [--generations N]
//   pollchild [--backend NAME] --burst N
//
// Defaults are the article's: tcp://*:5433, children sleeping a random 2 to 9 seconds, and
// no end (Ctrl-C stops it). --fast makes children of 50 to 200 ms; --generations N stops
// after the N-th child has terminated. The REP socket echoes each request, all its frames.
//
// --burst N starts N children that exit at the same moment instead, reports how many exits
// the loop saw, and waits for EOF on stdin before it exits (scripts/article-compare.sh
// counts its zombies meanwhile).

#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>

#include <zreap/zreap.hpp>

#include "article/burst.hpp"

namespace {

struct options {
    std::optional<zreap::backend> backend;
    std::string endpoint;  // default: the article's tcp://*:5433, inproc for --burst
    int min_ms = 2000;
    int max_ms = 9000;
    long generations = 0;  // 0 = forever
    long burst = 0;        // 0 = the article's program
};

// Longest child sleep accepted: a day.
constexpr long max_sleep_ms = 86400000;

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "pollchild: %s\n"
                 "usage: pollchild [--backend NAME] [--endpoint EP] [--sleep MIN_MS MAX_MS]\n"
                 "                 [--fast] [--generations N]\n"
                 "       pollchild [--backend NAME] --burst N\n",
                 why);
    std::exit(2);
}

// A decimal number from 0 to @p max, digits only.
long number(const char* s, const char* what, long max) {
    std::string text = s;
    bool digits = !text.empty() && text.size() <= 18 &&
                  text.find_first_not_of("0123456789") == std::string::npos;
    long v = digits ? std::strtol(s, nullptr, 10) : -1;
    if (!digits || v > max)
        usage((std::string("bad ") + what + " '" + text + "' (0 to " + std::to_string(max) + ")")
                  .c_str());
    return v;
}

options parse(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> const char* {
            if (i + 1 >= argc)
                usage(("missing value for " + a).c_str());
            return argv[++i];
        };
        if (a == "--backend") {
            const char* name = next();
            o.backend = zreap::backend_from_string(name);
            if (!o.backend)
                usage((std::string("unknown backend ") + name).c_str());
        } else if (a == "--endpoint") {
            o.endpoint = next();
        } else if (a == "--sleep") {
            o.min_ms = static_cast<int>(number(next(), "--sleep", max_sleep_ms));
            o.max_ms = static_cast<int>(number(next(), "--sleep", max_sleep_ms));
            if (o.max_ms < o.min_ms)
                usage("--sleep MAX_MS is below MIN_MS");
        } else if (a == "--fast") {
            o.min_ms = 50;
            o.max_ms = 200;
        } else if (a == "--generations") {
            o.generations = number(next(), "--generations", 1000000000);
        } else if (a == "--burst") {
            o.burst = number(next(), "--burst", 99999);
        } else {
            usage(("unknown argument " + a).c_str());
        }
    }
    return o;
}

// "3" for whole seconds, as the article prints it, else "0.120".
std::string seconds(int ms) {
    char buf[32];
    if (ms % 1000 == 0)
        std::snprintf(buf, sizeof buf, "%d", ms / 1000);
    else
        std::snprintf(buf, sizeof buf, "%d.%03d", ms / 1000, ms % 1000);
    return buf;
}

int run(options o) {
    if (o.endpoint.empty())
        o.endpoint = o.burst ? "inproc://pollchild" : "tcp://*:5433";
    zreap::loop lp = o.backend ? zreap::loop(*o.backend) : zreap::loop();

    void* ctx = zmq_ctx_new();
    void* rep = zmq_socket(ctx, ZMQ_REP);
    int linger = 0;
    // Each request frame is kept until it is echoed: a bound on one frame's size.
    std::int64_t max_frame = 65536;
    zmq_setsockopt(rep, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(rep, ZMQ_MAXMSGSIZE, &max_frame, sizeof max_frame);
    if (zmq_bind(rep, o.endpoint.c_str()) != 0) {
        std::fprintf(stderr, "pollchild: bind %s: %s\n", o.endpoint.c_str(),
                     zmq_strerror(zmq_errno()));
        zmq_close(rep);
        zmq_ctx_term(ctx);
        return 1;
    }
    char bound[256];
    size_t bound_len = sizeof bound;
    zmq_getsockopt(rep, ZMQ_LAST_ENDPOINT, bound, &bound_len);
    std::printf("pollchild: backend %s, listening on %s\n",
                std::string(zreap::to_string(lp.which())).c_str(), bound);

    // The article's REP side: every request gets a reply, whatever the children do. The
    // reply echoes the whole request, every frame: a REP socket answers a request only
    // after its last frame, so reading just the first would leave the rest for the next
    // callback.
    unsigned long received = 0;
    lp.add_socket(rep, ZMQ_POLLIN, [&](short) {
        std::deque<zmq_msg_t> frames;  // a deque never moves its elements: zmq_msg_t must not move
        int more = 1;
        while (more) {
            frames.emplace_back();
            zmq_msg_init(&frames.back());
            // With the sigaction or selfpipe backend a SIGCHLD can interrupt a zmq call on
            // this thread: retry, or a half-read request would wedge the REP socket.
            int rc;
            while ((rc = zmq_msg_recv(&frames.back(), rep, frames.size() == 1 ? ZMQ_DONTWAIT : 0)) <
                       0 &&
                   zmq_errno() == EINTR && frames.size() > 1) {
            }
            if (rc < 0) {  // nothing waiting after all
                zmq_msg_close(&frames.back());
                return;
            }
            more = zmq_msg_more(&frames.back());
        }
        ++received;
        std::printf("0MQ messages received (%lu)\n", received);
        std::fflush(stdout);
        for (std::size_t i = 0; i < frames.size(); ++i) {
            int flags = i + 1 < frames.size() ? ZMQ_SNDMORE : 0;
            while (zmq_msg_send(&frames[i], rep, flags) < 0 && zmq_errno() == EINTR) {
            }
            zmq_msg_close(&frames[i]);
        }
    });

    if (o.burst) {
        // N children exit at the same moment; the loop must hear every exit and reap
        // every child (scripts/article-compare.sh compares this with the article's ways).
        examples::exit_burst burst(static_cast<std::size_t>(o.burst));
        unsigned long reported = 0;
        for (pid_t pid : burst.pids()) {
            lp.watch_child(pid, [&](const zreap::exit_status&) {
                if (++reported == burst.pids().size())
                    lp.stop();
            });
        }
        lp.add_timer(std::chrono::seconds(30), std::chrono::milliseconds(0), [&] { lp.stop(); });
        burst.release();
        lp.run();
        zmq_close(rep);
        zmq_ctx_term(ctx);
        examples::report_burst("pollchild", burst.pids().size(), reported);
        return 0;
    }

    std::mt19937 rng(std::random_device{}());
    std::uniform_int_distribution<int> pick(o.min_ms, o.max_ms);
    long terminated = 0;
    pid_t current = 0;
    int stopped_by = 0;

    // Starts the one child. It is forked directly, as in the article: zreap only has to
    // learn of its exit. The callback that hears the exit starts the next child.
    std::function<void()> start_child = [&] {
        int ms = pick(rng);
        // Made before fork: the child of a process with threads (libzmq's) may call only
        // async-signal-safe functions, and malloc is not one.
        std::string line = "child: sleep(" + seconds(ms) + ")\n";
        std::fflush(stdout);  // else the child would print the parent's buffered lines again
        // Until the child has reset SIGINT and SIGTERM, it runs the parent's handler (the
        // loop's, from add_signal), which would wake the parent's loop instead of ending the
        // child: blocked around fork, such a signal waits until the child can die of it.
        sigset_t stop_signals, saved;
        sigemptyset(&stop_signals);
        sigaddset(&stop_signals, SIGINT);
        sigaddset(&stop_signals, SIGTERM);
        sigprocmask(SIG_BLOCK, &stop_signals, &saved);
        pid_t pid = fork();
        if (pid < 0) {
            int e = errno;
            sigprocmask(SIG_SETMASK, &saved, nullptr);
            throw std::system_error(e, std::generic_category(), "pollchild: fork");
        }
        if (pid == 0) {
            // Ctrl-C reaches the whole process group: the child just dies of it.
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            sigprocmask(SIG_SETMASK, &saved, nullptr);
            (void)!write(STDOUT_FILENO, line.data(), line.size());
            struct timespec left = {ms / 1000, (ms % 1000) * 1000000L};
            while (nanosleep(&left, &left) != 0 && errno == EINTR) {
            }
            _exit(0);  // not exit(): the parent's zmq context must not be torn down here
        }
        sigprocmask(SIG_SETMASK, &saved, nullptr);
        current = pid;
        lp.watch_child(pid, [&](const zreap::exit_status& s) {
            current = 0;
            ++terminated;
            std::printf("child terminated (%s)\n", zreap::to_string(s).c_str());
            if (stopped_by || (o.generations && terminated >= o.generations)) {
                lp.stop();
                return;
            }
            start_child();
        });
    };

    // SIGINT/SIGTERM: end the sleeping child and let the loop reap it as usual, so no
    // zombie outlives the parent even for a moment; its exit callback then stops the loop.
    // Handled by the loop before the first child starts: a signal that comes once the first
    // child is there must find the handler.
    auto on_stop_signal = [&](int sig) {
        if (stopped_by)
            return;
        stopped_by = sig;
        if (current > 0)
            kill(current, SIGTERM);
        else
            lp.stop();
    };
    lp.add_signal(SIGINT, on_stop_signal);
    lp.add_signal(SIGTERM, on_stop_signal);
    start_child();

    lp.run();

    std::printf("pollchild: %ld children terminated, %lu messages answered%s\n", terminated,
                received, stopped_by ? ", stopped by signal" : "");
    zmq_close(rep);
    zmq_ctx_term(ctx);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    options o = parse(argc, argv);
    try {
        return run(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "pollchild: %s\n", e.what());
        return 1;
    }
}
