// The smallest useful zreap program: a REP socket and three children in one loop.
// Each child ends differently; the loop reports each exit the moment it happens while it
// keeps answering requests.
//
//   hello [backend]

#include <signal.h>
#include <unistd.h>
#include <zmq.h>

#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#include <zreap/zreap.hpp>

using namespace std::chrono_literals;

int run(int argc, char** argv) {
    std::optional<zreap::backend> chosen;
    if (argc > 1 && !(chosen = zreap::backend_from_string(argv[1]))) {
        std::fprintf(stderr, "hello: unknown backend '%s'\n", argv[1]);
        return 2;
    }
    zreap::loop lp = chosen ? zreap::loop(*chosen) : zreap::loop();
    std::printf("backend: %s\n", std::string(zreap::to_string(lp.which())).c_str());

    void* ctx = zmq_ctx_new();
    void* rep = zmq_socket(ctx, ZMQ_REP);
    void* req = zmq_socket(ctx, ZMQ_REQ);
    zmq_bind(rep, "inproc://hello");
    zmq_connect(req, "inproc://hello");
    lp.add_socket(rep, ZMQ_POLLIN, [&](short) {
        char buf[64];
        int n = zmq_recv(rep, buf, sizeof buf - 1, 0);
        if (n < 0)
            return;
        buf[n] = 0;
        std::printf("request: %s\n", buf);
        // A SIGCHLD can interrupt a blocking zmq call with the signal-handler backends.
        while (zmq_send(rep, "pong", 4, 0) < 0 && zmq_errno() == EINTR) {
        }
    });
    zreap::source_id reply_id = lp.add_socket(req, ZMQ_POLLIN, [&](short) {
        char buf[64];
        int n = zmq_recv(req, buf, sizeof buf - 1, 0);
        if (n >= 0)
            std::printf("reply: %.*s\n", n, buf);
    });
    zmq_send(req, "ping", 4, 0);

    int left = 3;
    auto report = [&](const zreap::exit_status& s) {
        std::printf("%s\n", zreap::to_string(s).c_str());
        if (--left == 0)
            lp.stop();
    };
    auto start = [&](int ms, int code, int sig) {
        pid_t pid = fork();
        if (pid == 0) {
            usleep(static_cast<useconds_t>(ms) * 1000);
            if (sig)
                kill(getpid(), sig);
            _exit(code);
        }
        lp.watch_child(pid, report);
    };
    start(100, 0, 0);
    start(200, 3, 0);
    start(300, 0, SIGKILL);
    lp.run();

    lp.remove(reply_id);
    zmq_close(req);
    zmq_close(rep);
    zmq_ctx_term(ctx);
    return 0;
}

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "hello: %s\n", e.what());
        return 1;
    }
}
