// Command-line client of examples/jobserver (the protocol is described there and in
// docs/examples.md).
//
//   jobclient [--endpoint EP] [--timeout MS] run PROG [ARG...]
//   jobclient [--endpoint EP] [--timeout MS] cancel ID
//   jobclient [--endpoint EP] [--timeout MS] ping
//
// run prints "job ID accepted" as soon as the server has queued the job, then the outcome
// and the captured output when it ends. Exit status: the job's exit code; 128+N if a signal
// N killed it; 125 if the server refused or could not start it, or cancelled it before it
// started; 124 on timeout. cancel and ping exit 0 on success.

#include <zmq.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using frames = std::vector<std::string>;

[[noreturn]] void usage(const std::string& why) {
    std::fprintf(stderr,
                 "jobclient: %s\n"
                 "usage: jobclient [--endpoint EP] [--timeout MS] run PROG [ARG...]\n"
                 "       jobclient [--endpoint EP] [--timeout MS] cancel ID\n"
                 "       jobclient [--endpoint EP] [--timeout MS] ping\n",
                 why.c_str());
    std::exit(2);
}

bool send_all(void* sock, const frames& msg) {
    for (std::size_t i = 0; i < msg.size(); ++i) {
        int flags = i + 1 < msg.size() ? ZMQ_SNDMORE : 0;
        while (zmq_send(sock, msg[i].data(), msg[i].size(), flags) < 0) {
            if (zmq_errno() != EINTR)
                return false;
        }
    }
    return true;
}

// Waits up to @p timeout_ms (negative = for ever) for one whole message.
bool recv_all(void* sock, long timeout_ms, frames& msg) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
        long wait = -1;
        if (timeout_ms >= 0) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            wait = left.count() > 0 ? static_cast<long>(left.count()) : 0;
        }
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&item, 1, wait);
        if (n < 0 && zmq_errno() == EINTR)
            continue;
        if (n <= 0)
            return false;
        break;
    }
    msg.clear();
    int more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, 0) < 0) {
            zmq_msg_close(&m);
            if (zmq_errno() == EINTR)
                continue;
            return false;
        }
        msg.emplace_back(static_cast<const char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
        more = zmq_msg_more(&m);
        zmq_msg_close(&m);
    }
    return true;
}

void print_output(const char* name, const std::string& data, bool truncated) {
    std::printf("--- %s (%zu bytes%s)\n", name, data.size(), truncated ? ", truncated" : "");
    if (data.empty())
        return;
    std::fwrite(data.data(), 1, data.size(), stdout);
    if (data.back() != '\n')
        std::printf("\n");
    if (truncated)
        std::printf("[... output truncated by the server]\n");
}

// Prints a "result" message; returns the exit status jobclient should end with.
int show_result(const frames& r) {
    const std::string& id = r[1];
    const std::string& outcome = r[2];
    const std::string& detail = r[3];
    const std::string& flags = r[6];
    auto has = [&](const char* f) {
        std::string padded = " " + flags + " ";
        return padded.find(std::string(" ") + f + " ") != std::string::npos;
    };
    int rc = 125;
    if (outcome == "exit") {
        rc = std::atoi(detail.c_str());
        std::printf("job %s: exited with code %s", id.c_str(), detail.c_str());
    } else if (outcome == "signal") {
        rc = 128 + std::atoi(detail.c_str());
        std::printf("job %s: killed by signal %s (%s)", id.c_str(), detail.c_str(),
                    strsignal(std::atoi(detail.c_str())));
    } else if (outcome == "cancelled") {
        std::printf("job %s: cancelled before it started", id.c_str());
    } else {
        std::printf("job %s: could not be started: %s", id.c_str(), detail.c_str());
    }
    if (!flags.empty())
        std::printf(" [%s]", flags.c_str());
    std::printf("\n");
    print_output("stdout", r[4], has("stdout-truncated"));
    print_output("stderr", r[5], has("stderr-truncated"));
    return rc;
}

int run(int argc, char** argv) {
    std::string endpoint = "tcp://127.0.0.1:5433";
    long timeout_ms = -1;
    int i = 1;
    for (; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--endpoint" && i + 1 < argc) {
            endpoint = argv[++i];
        } else if (a == "--timeout" && i + 1 < argc) {
            timeout_ms = std::atol(argv[++i]);
        } else if (a.rfind("--", 0) == 0) {
            usage("unknown option " + a);
        } else {
            break;
        }
    }
    if (i >= argc)
        usage("no request given");
    frames request(argv + i, argv + argc);
    const std::string& type = request[0];
    if (type == "run" && request.size() < 2)
        usage("run needs a program");
    if (type == "cancel" && request.size() != 2)
        usage("cancel needs one job id");

    void* ctx = zmq_ctx_new();
    // DEALER, not REQ: a run request has two replies (accepted, then the result).
    void* sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    int rc = 0;
    frames reply;
    if (zmq_connect(sock, endpoint.c_str()) != 0 || !send_all(sock, request)) {
        std::fprintf(stderr, "jobclient: %s: %s\n", endpoint.c_str(), zmq_strerror(zmq_errno()));
        rc = 125;
    } else if (!recv_all(sock, timeout_ms, reply) || reply.empty()) {
        std::fprintf(stderr, "jobclient: no reply from %s\n", endpoint.c_str());
        rc = 124;
    } else if (reply[0] == "error") {
        std::printf("error: %s\n", reply.size() > 1 ? reply[1].c_str() : "");
        rc = 125;
    } else if (reply[0] == "pong") {
        std::printf("pong: %s\n", reply.size() > 1 ? reply[1].c_str() : "");
    } else if (reply[0] == "ok") {
        std::printf("job %s: cancel requested\n", reply.size() > 1 ? reply[1].c_str() : "?");
    } else if (reply[0] == "accepted" && reply.size() == 2) {
        std::printf("job %s accepted\n", reply[1].c_str());
        std::fflush(stdout);  // a script may be waiting for this line to cancel the job
        frames result;
        if (!recv_all(sock, timeout_ms, result)) {
            std::fprintf(stderr, "jobclient: no result from %s\n", endpoint.c_str());
            rc = 124;
        } else if (result.size() != 7 || result[0] != "result" || result[1] != reply[1]) {
            std::fprintf(stderr, "jobclient: unexpected reply '%s'\n", result[0].c_str());
            rc = 125;
        } else {
            rc = show_result(result);
        }
    } else {
        std::fprintf(stderr, "jobclient: unexpected reply '%s'\n", reply[0].c_str());
        rc = 125;
    }
    std::fflush(stdout);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return rc;
}

}  // namespace

int main(int argc, char** argv) {
    return run(argc, argv);
}
