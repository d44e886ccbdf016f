// zreap inside a program that keeps its own zmq_poll loop, as the article's program does:
// the program polls its REP socket itself and lets zreap add the items it needs for child
// exits (loop::prepare), then hands the results back (loop::dispatch). Nothing else of the
// program's loop changes.
//
//   embed_zmq_poll [backend]
//
// Starts three children that exit with 1, 2 and 3 while a client thread sends requests;
// prints each exit and each request, and exits 0 once every exit and every request has been
// handled (non-zero otherwise: the test suite runs it).

#include <zmq.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <zreap/zreap.hpp>

int main(int argc, char** argv) try {
    std::optional<zreap::backend> chosen;
    if (argc > 1 && !(chosen = zreap::backend_from_string(argv[1]))) {
        std::fprintf(stderr, "embed_zmq_poll: unknown backend '%s'\n", argv[1]);
        return 2;
    }
    zreap::loop children = chosen ? zreap::loop(*chosen) : zreap::loop();

    void* ctx = zmq_ctx_new();
    void* rep = zmq_socket(ctx, ZMQ_REP);
    zmq_bind(rep, "inproc://embed");
    constexpr int requests = 5;
    std::thread client([ctx] {
        void* req = zmq_socket(ctx, ZMQ_REQ);
        zmq_connect(req, "inproc://embed");
        // A SIGCHLD handler (selfpipe, sigaction, libev) may run on this thread too and
        // interrupt a blocking call: retry on EINTR.
        for (int i = 0; i < requests; ++i) {
            while (zmq_send(req, "ping", 4, 0) < 0 && zmq_errno() == EINTR) {
            }
            char buf[8];
            while (zmq_recv(req, buf, sizeof buf, 0) < 0 && zmq_errno() == EINTR) {
            }
        }
        zmq_close(req);
    });

    int exits = 0, codes = 0;
    for (int code = 1; code <= 3; ++code) {
        zreap::spawn_options o;
        o.argv = {"/bin/sh", "-c", "exit " + std::to_string(code)};
        // spawn's result is not needed here: the exit comes to the callback.
        (void)zreap::spawn(children, o, [&](const zreap::exit_status& s) {
            std::printf("%s\n", zreap::to_string(s).c_str());
            ++exits;
            codes += s.exit_code();
        });
    }

    // The program's own loop. Its items first, then zreap's.
    int answered = 0;
    while (exits < 3 || answered < requests) {
        std::vector<zmq_pollitem_t> items{{rep, 0, ZMQ_POLLIN, 0}};
        const std::size_t mine = items.size();
        const int zreap_wait = children.prepare(items);
        const int my_wait = 5000;
        const int wait = zreap_wait < 0 ? my_wait : std::min(my_wait, zreap_wait);
        // -1 (EINTR from a SIGCHLD handler) is fine: dispatch() is called either way.
        int rc = zmq_poll(items.data(), static_cast<int>(items.size()), wait);
        if (rc == 0 && zreap_wait < 0) {
            std::fprintf(stderr, "embed_zmq_poll: nothing happened for 5 s\n");
            return 1;
        }
        if (items[0].revents & ZMQ_POLLIN) {
            char buf[8];
            if (zmq_recv(rep, buf, sizeof buf, ZMQ_DONTWAIT) >= 0) {
                while (zmq_send(rep, "pong", 4, 0) < 0 && zmq_errno() == EINTR) {
                }
                std::printf("request %d answered\n", ++answered);
            }
        }
        children.dispatch(items.data() + mine, items.size() - mine);
    }
    client.join();
    zmq_close(rep);
    zmq_ctx_term(ctx);
    return codes == 6 ? 0 : 1;
} catch (const std::exception& e) {
    std::fprintf(stderr, "embed_zmq_poll: %s\n", e.what());
    return 1;
}
