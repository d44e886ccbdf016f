// The program of the article "ZeroMQ: poll() and wait for child process", written with
// zreap: a parent answers requests on a ZMQ_REP socket while it keeps exactly one child
// alive, starting the next one each time the current one exits. docs/examples.md walks
// through it and maps each step to the article.
//
//   pollchild [--backend NAME] [--endpoint EP] [--sleep MIN_MS MAX_MS] [--fast]
//             [--generations N]
//
// Defaults are the article's: tcp://*:5433, children sleeping a random 2 to 9 seconds, and
// no end (Ctrl-C stops it). --fast makes children of 50 to 200 ms; --generations N stops
// after the N-th child has terminated.

#include <signal.h>
#include <unistd.h>
#include <zmq.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>

#include <zreap/zreap.hpp>

#include "signal_pipe.hpp"

namespace {

struct options {
    std::optional<zreap::backend> backend;
    std::string endpoint = "tcp://*:5433";
    int min_ms = 2000;
    int max_ms = 9000;
    long generations = 0;  // 0 = forever
};

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "pollchild: %s\n"
                 "usage: pollchild [--backend NAME] [--endpoint EP] [--sleep MIN_MS MAX_MS]\n"
                 "                 [--fast] [--generations N]\n",
                 why);
    std::exit(2);
}

long number(const char* s, const char* what) {
    char* end = nullptr;
    errno = 0;
    long v = std::strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0)
        usage((std::string("bad ") + what).c_str());
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
            o.min_ms = static_cast<int>(number(next(), "--sleep"));
            o.max_ms = static_cast<int>(number(next(), "--sleep"));
            if (o.max_ms < o.min_ms)
                usage("--sleep MAX_MS is below MIN_MS");
        } else if (a == "--fast") {
            o.min_ms = 50;
            o.max_ms = 200;
        } else if (a == "--generations") {
            o.generations = number(next(), "--generations");
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

int run(const options& o) {
    examples::signal_pipe sigs;
    zreap::loop lp = o.backend ? zreap::loop(*o.backend) : zreap::loop();

    void* ctx = zmq_ctx_new();
    void* rep = zmq_socket(ctx, ZMQ_REP);
    int linger = 0;
    zmq_setsockopt(rep, ZMQ_LINGER, &linger, sizeof linger);
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

    // The article's REP side: every request gets a reply, whatever the children do.
    unsigned long received = 0;
    lp.add_socket(rep, ZMQ_POLLIN, [&](short) {
        char buf[256];
        int n = zmq_recv(rep, buf, sizeof buf, ZMQ_DONTWAIT);
        if (n < 0)
            return;
        ++received;
        std::printf("0MQ messages received (%lu)\n", received);
        std::fflush(stdout);
        // Echo it back (cut to the buffer: zmq_recv returns the full length). With the
        // sigaction or selfpipe backend a SIGCHLD can interrupt a blocking zmq call on this
        // thread: a reply left unsent would wedge the REP socket, so send again on EINTR.
        while (zmq_send(rep, buf, static_cast<size_t>(n < 256 ? n : 256), 0) < 0 &&
               zmq_errno() == EINTR) {
        }
    });

    std::mt19937 rng(std::random_device{}());
    std::uniform_int_distribution<int> pick(o.min_ms, o.max_ms);
    long terminated = 0;
    pid_t current = 0;
    int stopped_by = 0;

    // Starts the one child. It is forked directly, as in the article: zreap only has to
    // learn of its exit. The callback that hears the exit starts the next child.
    std::function<void()> start_child = [&] {
        int ms = pick(rng);
        std::fflush(stdout);  // else the child would print the parent's buffered lines again
        pid_t pid = fork();
        if (pid < 0)
            throw std::system_error(errno, std::generic_category(), "pollchild: fork");
        if (pid == 0) {
            // Ctrl-C reaches the whole process group: the child just dies of it.
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            std::printf("child: sleep(%s)\n", seconds(ms).c_str());
            std::fflush(stdout);
            usleep(static_cast<useconds_t>(ms) * 1000);
            _exit(0);  // not exit(): the parent's zmq context must not be torn down here
        }
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
    start_child();

    // SIGINT/SIGTERM: end the sleeping child and let the loop reap it as usual, so no
    // zombie outlives the parent even for a moment; its exit callback then stops the loop.
    lp.add_fd(sigs.fd(), ZMQ_POLLIN, [&](short) {
        int sig = sigs.take();
        if (!sig || stopped_by)
            return;
        stopped_by = sig;
        if (current > 0)
            kill(current, SIGTERM);
        else
            lp.stop();
    });

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
