// Command-line client of examples/jobserver (the protocol is described there and in
// docs/examples.md).
//
//   jobclient [OPTIONS] run PROG [ARG...]
//   jobclient [OPTIONS] cancel ID
//   jobclient [OPTIONS] ping
//   jobclient keygen PREFIX
//
//   --endpoint EP         the server (default tcp://127.0.0.1:5433)
//   --timeout MS          how long to wait for each reply the server gives at once
//                         ("accepted", "ok", "pong", "error"); default 10000
//   --job-timeout MS      cancel a job that runs longer than this; default 0, no limit
//   --server-key KEY      the server's CURVE public key (Z85 text, or a .pub file)
//   --key FILE            this client's CURVE key pair (a .key file); with --server-key
//
// run prints "job ID accepted" as soon as the server has queued the job, then the outcome
// and the captured output when it ends. While it waits, SIGINT or SIGTERM cancels the job
// (a second one leaves at once, and the closed connection makes the server end the job).
// Exit status: the job's exit code; 128+N if a signal N killed it; 124 if the server did
// not answer within --timeout, or the job was cancelled after --job-timeout; 125 if the
// server refused or could not start the job, cancelled it before it started, refused this
// client's key, or the connection was lost; 2 for a usage error. cancel and ping exit 0
// on success.

#include <zmq.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <zreap/zreap.hpp>

#include "curve_keys.hpp"
#include "zmq_frames.hpp"

namespace {

using frames = std::vector<std::string>;
using clock_type = std::chrono::steady_clock;

[[noreturn]] void usage(const std::string& why) {
    std::fprintf(stderr,
                 "jobclient: %s\n"
                 "usage: jobclient [OPTIONS] run PROG [ARG...]\n"
                 "       jobclient [OPTIONS] cancel ID\n"
                 "       jobclient [OPTIONS] ping\n"
                 "       jobclient keygen PREFIX\n"
                 "options: --endpoint EP, --timeout MS (default 10000), --job-timeout MS "
                 "(default 0: none),\n"
                 "         --server-key KEY|FILE, --key FILE\n",
                 why.c_str());
    std::exit(2);
}

long milliseconds(const char* s, const std::string& what, long min) {
    std::string text = s;
    bool digits = !text.empty() && text.size() <= 10 &&
                  text.find_first_not_of("0123456789") == std::string::npos;
    long v = digits ? std::atol(s) : -1;
    if (!digits || v < min || v > 2147483647L)
        usage("bad value for " + what + " '" + text + "' (" + std::to_string(min) +
              " to 2147483647 ms)");
    return v;
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

// The client's socket, with a monitor that tells a refused CURVE key or a lost connection
// from a server that is merely slow, and SIGINT/SIGTERM as events. The signals come through a
// zreap loop embedded in the client's own zmq_poll (loop::prepare and loop::dispatch): the
// client keeps its simple wait, and zreap owns the handlers.
class connection {
  public:
    enum class event { message, timeout, signal, lost, refused };

    connection(const std::string& endpoint, const std::optional<examples::curve_pair>& key,
               const std::string& server_key)
        : endpoint_(endpoint) {
        for (int sig : {SIGINT, SIGTERM})
            signals_.add_signal(sig, [this](int signo) { pending_signal_ = signo; });
        ctx_ = zmq_ctx_new();
        // DEALER, not REQ: a run request has two replies (accepted, then the result).
        sock_ = zmq_socket(ctx_, ZMQ_DEALER);
        int linger = 0;
        zmq_setsockopt(sock_, ZMQ_LINGER, &linger, sizeof linger);
        // A server that dies or hangs without closing the connection is noticed.
        int ivl = 2000, timeout = 10000;
        zmq_setsockopt(sock_, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl);
        zmq_setsockopt(sock_, ZMQ_HEARTBEAT_TIMEOUT, &timeout, sizeof timeout);
        if (key) {
            zmq_setsockopt(sock_, ZMQ_CURVE_SERVERKEY, server_key.data(), 40);
            zmq_setsockopt(sock_, ZMQ_CURVE_PUBLICKEY, key->public_key.data(), 40);
            zmq_setsockopt(sock_, ZMQ_CURVE_SECRETKEY, key->secret_key.data(), 40);
        }
        zmq_socket_monitor(
            sock_, "inproc://jobclient-monitor",
            ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL);
        mon_ = zmq_socket(ctx_, ZMQ_PAIR);
        zmq_setsockopt(mon_, ZMQ_LINGER, &linger, sizeof linger);
        zmq_connect(mon_, "inproc://jobclient-monitor");
        if (zmq_connect(sock_, endpoint.c_str()) != 0)
            throw std::runtime_error(endpoint + ": " + zmq_strerror(zmq_errno()));
    }
    ~connection() {
        zmq_close(mon_);
        zmq_close(sock_);
        zmq_ctx_term(ctx_);
    }
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    bool send(const frames& msg) { return examples::send_frames(sock_, msg); }

    // Waits until @p deadline (none: for ever) for a message, a signal or the loss of the
    // connection; why it ended is in why().
    event wait(std::optional<clock_type::time_point> deadline, frames& msg) {
        for (;;) {
            if (examples::recv_frames(sock_, msg, ZMQ_DONTWAIT))
                return event::message;
            if (int sig = std::exchange(pending_signal_, 0)) {
                last_signal_ = sig;
                return event::signal;
            }
            if (std::optional<event> e = connection_event())
                return *e;
            long wait_ms = -1;
            if (deadline) {
                auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    *deadline - clock_type::now());
                if (left.count() <= 0)
                    return event::timeout;
                wait_ms = static_cast<long>(left.count());
            }
            std::vector<zmq_pollitem_t> items{{sock_, 0, ZMQ_POLLIN, 0}, {mon_, 0, ZMQ_POLLIN, 0}};
            const std::size_t mine = items.size();
            const long zreap_wait = signals_.prepare(items);
            if (zreap_wait >= 0 && (wait_ms < 0 || zreap_wait < wait_ms))
                wait_ms = zreap_wait;
            const int rc = zmq_poll(items.data(), static_cast<int>(items.size()), wait_ms);
            const int err = zmq_errno();
            signals_.dispatch(items.data() + mine, items.size() - mine);  // after every poll
            if (rc < 0 && err != EINTR)
                throw std::runtime_error(std::string("zmq_poll: ") + zmq_strerror(err));
        }
    }
    const std::string& why() const noexcept { return why_; }
    int last_signal() const noexcept { return last_signal_; }

  private:
    std::optional<event> connection_event() {
        frames ev;
        while (examples::recv_frames(mon_, ev, ZMQ_DONTWAIT)) {
            if (ev.empty() || ev[0].size() != 6)
                continue;
            std::uint16_t id;
            std::memcpy(&id, ev[0].data(), 2);
            if (id == ZMQ_EVENT_CONNECTED) {
                connected_ = true;
            } else if (id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
                why_ = "the server at " + endpoint_ + " refused this client's CURVE key";
                return event::refused;
            } else if (id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
                       id == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
                why_ = "the handshake with " + endpoint_ +
                       " failed (a wrong --server-key, or CURVE on one side only)";
                return event::refused;
            } else if (id == ZMQ_EVENT_DISCONNECTED && connected_) {
                why_ = "the connection to " + endpoint_ +
                       " was lost (the server stopped, or closed it because a request frame was "
                       "over its --max-frame limit)";
                return event::lost;
            }
        }
        return std::nullopt;
    }

    std::string endpoint_;
    zreap::loop signals_;  // owns the SIGINT and SIGTERM handlers while the connection lives
    int pending_signal_ = 0;
    void* ctx_ = nullptr;
    void* sock_ = nullptr;
    void* mon_ = nullptr;
    bool connected_ = false;
    std::string why_;
    int last_signal_ = 0;
};

// Waits for the result of job @p id, cancelling it on a signal or after @p job_timeout.
int await_result(connection& conn, const std::string& id, std::chrono::milliseconds timeout,
                 std::optional<clock_type::time_point> job_deadline) {
    bool cancelled = false;
    bool timed_out = false;
    std::optional<clock_type::time_point> deadline = job_deadline;
    auto cancel = [&](const char* why) {
        std::fprintf(stderr, "jobclient: %s, cancelling job %s\n", why, id.c_str());
        cancelled = true;
        deadline = clock_type::now() + timeout;
        return conn.send({"cancel", id});
    };
    for (;;) {
        frames msg;
        switch (conn.wait(deadline, msg)) {
            case connection::event::message:
                // Our cancel's "ok" or "error" (the job may have ended meanwhile) is not news.
                if (msg.size() == 7 && msg[0] == "result" && msg[1] == id) {
                    int rc = show_result(msg);
                    return timed_out ? 124 : rc;
                }
                if (msg[0] == "ok" || msg[0] == "error")
                    continue;
                std::fprintf(stderr, "jobclient: unexpected reply '%s'\n", msg[0].c_str());
                return 125;
            case connection::event::timeout:
                if (cancelled) {
                    std::fprintf(stderr, "jobclient: no result for job %s\n", id.c_str());
                    return 124;
                }
                timed_out = true;
                cancel("job timeout");
                continue;
            case connection::event::signal:
                if (cancelled)
                    return 128 + conn.last_signal();  // the closed connection ends the job
                cancel(conn.last_signal() == SIGINT ? "interrupted" : "terminated");
                continue;
            case connection::event::lost:
            case connection::event::refused:
                std::fprintf(stderr, "jobclient: %s\n", conn.why().c_str());
                return 125;
        }
    }
}

int run(int argc, char** argv) {
    std::string endpoint = "tcp://127.0.0.1:5433";
    long timeout_ms = 10000;
    long job_timeout_ms = 0;
    std::string server_key_arg, key_file;
    int i = 1;
    for (; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> const char* {
            if (i + 1 >= argc)
                usage("missing value for " + a);
            return argv[++i];
        };
        if (a == "--endpoint") {
            endpoint = next();
        } else if (a == "--timeout") {
            timeout_ms = milliseconds(next(), a, 1);
        } else if (a == "--job-timeout") {
            job_timeout_ms = milliseconds(next(), a, 0);
        } else if (a == "--server-key") {
            server_key_arg = next();
        } else if (a == "--key") {
            key_file = next();
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
    if (type == "keygen") {
        if (request.size() != 2)
            usage("keygen needs one PREFIX");
        examples::curve_pair keys = examples::write_key_files(request[1]);
        std::printf(
            "wrote %s.key (keep it secret) and %s.pub\n"
            "for the server's --curve-clients file: %s %s\n",
            request[1].c_str(), request[1].c_str(), keys.public_key.c_str(),
            request[1].substr(request[1].rfind('/') + 1).c_str());
        return 0;
    }
    if (type != "run" && type != "cancel" && type != "ping")
        usage("unknown request '" + type + "'");
    if (type == "run" && request.size() < 2)
        usage("run needs a program");
    if (type == "cancel" && request.size() != 2)
        usage("cancel needs one job id");
    if (server_key_arg.empty() != key_file.empty())
        usage("--server-key and --key go together");

    std::optional<examples::curve_pair> key;
    std::string server_key = server_key_arg;
    if (!key_file.empty()) {
        key = examples::read_key_file(key_file, true);
        if (!examples::valid_curve_key(server_key))
            server_key = examples::read_key_file(server_key_arg, false).public_key;
    }

    connection conn(endpoint, key, server_key);
    auto timeout = std::chrono::milliseconds(timeout_ms);
    frames reply;
    if (!conn.send(request)) {
        std::fprintf(stderr, "jobclient: %s: %s\n", endpoint.c_str(), zmq_strerror(zmq_errno()));
        return 125;
    }
    switch (conn.wait(clock_type::now() + timeout, reply)) {
        case connection::event::message:
            break;
        case connection::event::timeout:
            std::fprintf(stderr, "jobclient: no reply from %s within %ld ms\n", endpoint.c_str(),
                         timeout_ms);
            return 124;
        case connection::event::signal:
            return 128 + conn.last_signal();
        case connection::event::lost:
        case connection::event::refused:
            std::fprintf(stderr, "jobclient: %s\n", conn.why().c_str());
            return 125;
    }
    if (reply[0] == "error") {
        std::printf("error: %s\n", reply.size() > 1 ? reply[1].c_str() : "");
        return 125;
    }
    if (reply[0] == "pong") {
        std::printf("pong: %s\n", reply.size() > 1 ? reply[1].c_str() : "");
        return 0;
    }
    if (reply[0] == "ok") {
        std::printf("job %s: cancel requested\n", reply.size() > 1 ? reply[1].c_str() : "?");
        return 0;
    }
    if (reply[0] != "accepted" || reply.size() != 2) {
        std::fprintf(stderr, "jobclient: unexpected reply '%s'\n", reply[0].c_str());
        return 125;
    }
    std::printf("job %s accepted\n", reply[1].c_str());
    std::fflush(stdout);  // a script may be waiting for this line to cancel the job
    std::optional<clock_type::time_point> job_deadline;
    if (job_timeout_ms > 0)
        job_deadline = clock_type::now() + std::chrono::milliseconds(job_timeout_ms);
    int rc = await_result(conn, reply[1], timeout, job_deadline);
    std::fflush(stdout);
    return rc;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "jobclient: %s\n", e.what());
        return 125;
    }
}
