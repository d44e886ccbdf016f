// A program that uses zreap only through its installed interface: <zreap/zreap.hpp> and the
// library. It proves the headers, the link line and the run-time lookup all work, by doing
// the job zreap exists for: one loop hearing a zmq message and a child's exit.

#include <sys/types.h>
#include <unistd.h>
#include <zmq.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <zreap/zreap.hpp>

namespace {

int fail(const std::string& why) {
    std::fprintf(stderr, "consumer: %s\n", why.c_str());
    return 1;
}

}  // namespace

int main() {
    using namespace std::chrono_literals;
    std::printf("zreap %s, backends:", ZREAP_VERSION);
    for (zreap::backend b : zreap::compiled_backends())
        std::printf(" %s", std::string(zreap::to_string(b)).c_str());
    std::printf("\n");

    zreap::loop lp;
    void* ctx = zmq_ctx_new();
    void* pull = zmq_socket(ctx, ZMQ_PULL);
    void* push = zmq_socket(ctx, ZMQ_PUSH);
    if (zmq_bind(pull, "inproc://consumer") != 0 || zmq_connect(push, "inproc://consumer") != 0)
        return fail("zmq bind/connect");

    std::string got;
    lp.add_socket(pull, ZMQ_POLLIN, [&](short) {
        char buf[16];
        int n = zmq_recv(pull, buf, sizeof buf, ZMQ_DONTWAIT);
        if (n > 0)
            got.assign(buf, static_cast<std::size_t>(n));
    });

    pid_t pid = fork();
    if (pid < 0)
        return fail("fork");
    if (pid == 0)
        _exit(7);
    int code = -1;
    lp.watch_child(pid, [&](const zreap::exit_status& s) { code = s.exit_code(); });
    zmq_send(push, "ping", 4, 0);

    // Bounded: a lost exit or message fails the test instead of hanging it.
    auto end = std::chrono::steady_clock::now() + 10s;
    while ((code < 0 || got.empty()) && std::chrono::steady_clock::now() < end)
        lp.run_once(100ms);

    zmq_close(push);
    zmq_close(pull);
    zmq_ctx_term(ctx);
    if (got != "ping")
        return fail("message not received: '" + got + "'");
    if (code != 7)
        return fail("child exit code " + std::to_string(code) + ", expected 7");
    std::printf("ok: backend %s heard the message and the exit\n",
                std::string(zreap::to_string(lp.which())).c_str());
    return 0;
}
