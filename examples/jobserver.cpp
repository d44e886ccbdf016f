// A job server: clients send a command line over ZeroMQ, the server runs it in a child
// process and sends back its exit status and its captured output. Sockets, pipes, child
// exits, grace timers and SIGINT/SIGTERM all arrive through one zreap loop.
//
//   jobserver [--endpoint EP] [--backend NAME] [--max-jobs N] [--max-queue N]
//             [--output-cap BYTES] [--max-frame BYTES] [--max-args N] [--grace MS] [--quiet]
//
// Protocol (a ROUTER socket; clients are DEALER sockets, since one request can have two
// replies). A request is a multipart message. If its first frame is empty it is taken as an
// envelope delimiter (what a REQ socket adds) and every reply carries one back.
//
//   run PROG ARG...   -> "accepted" ID            at once, or "error" MESSAGE
//                     -> "result" ID OUTCOME DETAIL STDOUT STDERR FLAGS   when it ends
//   cancel ID         -> "ok" ID                  or "error" MESSAGE
//   ping              -> "pong" "running=N queued=N finished=N"
//   anything else     -> "error" MESSAGE
//
// On one connection the immediate replies ("accepted", "ok", "pong", "error") come in the
// order of the requests; "result" messages arrive in between, whenever a job ends. Every
// accepted job gets exactly one "result":
//
//   OUTCOME   DETAIL
//   exit      the exit code, "0".."255"
//   signal    the number of the signal that killed it
//   cancelled ""   (cancelled, or the server shut down, before the job started)
//   error     why it could not be started (e.g. the program vanished while it was queued)
//
// FLAGS is a space-separated list, maybe empty, of: cancelled (a cancel or the shutdown
// ended it), stdout-truncated, stderr-truncated (the output went past --output-cap and the
// rest was read and dropped), core-dumped, shutdown.

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <zreap/zreap.hpp>

#include "signal_pipe.hpp"

namespace {

using namespace std::chrono_literals;

struct options {
    std::string endpoint = "tcp://127.0.0.1:5433";
    std::optional<zreap::backend> backend;
    std::size_t max_jobs = 8;
    std::size_t max_queue = 1000;
    std::size_t output_cap = 64 * 1024;
    std::size_t max_frame = 64 * 1024;
    std::size_t max_args = 256;
    std::chrono::milliseconds grace{2000};
    bool quiet = false;
};

[[noreturn]] void usage(const std::string& why) {
    std::fprintf(stderr,
                 "jobserver: %s\n"
                 "usage: jobserver [--endpoint EP] [--backend NAME] [--max-jobs N] "
                 "[--max-queue N]\n"
                 "                 [--output-cap BYTES] [--max-frame BYTES] [--max-args N] "
                 "[--grace MS] [--quiet]\n",
                 why.c_str());
    std::exit(2);
}

std::size_t number(const char* s, const std::string& what, std::size_t min) {
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || v < min)
        usage("bad value for " + what);
    return static_cast<std::size_t>(v);
}

options parse(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> const char* {
            if (i + 1 >= argc)
                usage("missing value for " + a);
            return argv[++i];
        };
        if (a == "--endpoint") {
            o.endpoint = next();
        } else if (a == "--backend") {
            const char* name = next();
            o.backend = zreap::backend_from_string(name);
            if (!o.backend)
                usage(std::string("unknown backend ") + name);
        } else if (a == "--max-jobs") {
            o.max_jobs = number(next(), a, 1);
        } else if (a == "--max-queue") {
            o.max_queue = number(next(), a, 0);
        } else if (a == "--output-cap") {
            o.output_cap = number(next(), a, 0);
        } else if (a == "--max-frame") {
            o.max_frame = number(next(), a, 1);
        } else if (a == "--max-args") {
            o.max_args = number(next(), a, 1);
        } else if (a == "--grace") {
            o.grace = std::chrono::milliseconds(number(next(), a, 0));
        } else if (a == "--quiet") {
            o.quiet = true;
        } else {
            usage("unknown argument " + a);
        }
    }
    return o;
}

// True if @p prog names something execvp() could run: a path to an executable regular
// file, or a name found so in PATH. Checked when the request arrives, so a client hears
// "no such program" at once even when its job would wait in the queue; spawn() still
// reports the real exec error if the file goes away meanwhile.
bool runnable(const std::string& prog) {
    auto ok = [](const std::string& path) {
        struct stat st;
        return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
               ::access(path.c_str(), X_OK) == 0;
    };
    if (prog.find('/') != std::string::npos)
        return ok(prog);
    const char* path = std::getenv("PATH");
    std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
    std::size_t start = 0;
    for (;;) {
        std::size_t colon = dirs.find(':', start);
        std::string dir = dirs.substr(start, colon - start);
        if (ok((dir.empty() ? std::string(".") : dir) + "/" + prog))
            return true;
        if (colon == std::string::npos)
            return false;
        start = colon + 1;
    }
}

// One captured stream of a running job.
struct capture {
    std::string data;
    bool truncated = false;
    zreap::source_id source = 0;  // 0 once EOF was read
};

struct job {
    std::uint64_t id = 0;
    std::string client;  // ROUTER routing id
    bool delimiter = false;
    std::vector<std::string> argv;
    zreap::child proc;
    bool running = false;
    bool cancelled = false;
    capture out, err;
};

class server {
  public:
    server(const options& o, void* sock, zreap::loop& lp) : o_(o), sock_(sock), lp_(lp) {}

    // Reads and answers up to a batch of requests; the socket is level-triggered, so the
    // loop calls again for the rest after it has looked at pipes and exits.
    void on_socket() {
        retired_.clear();
        for (int i = 0; i < 64; ++i) {
            if (!handle_one())
                return;
        }
    }

    // SIGINT/SIGTERM: no new jobs; queued jobs are answered "cancelled"; running ones get
    // SIGTERM, then SIGKILL after the grace period; the loop ends once the last one is reaped.
    void shut_down(int sig) {
        if (shutting_down_)
            return;
        shutting_down_ = true;
        log("jobserver: signal %d, shutting down (%zu running, %zu queued)\n", sig, running_,
            queue_.size());
        while (!queue_.empty()) {
            std::uint64_t id = queue_.front();
            queue_.pop_front();
            auto it = jobs_.find(id);
            send_result(*it->second, "cancelled", "", "shutdown");
            jobs_.erase(it);
        }
        for (auto& [id, j] : jobs_) {
            if (!j->cancelled) {
                j->cancelled = true;
                j->proc.terminate(o_.grace);
            }
        }
        if (running_ == 0)
            lp_.stop();
    }

    std::size_t running() const { return running_; }

  private:
    using frames = std::vector<std::string>;

    template <typename... A>
    void log(const char* fmt, A... a) {
        if (!o_.quiet)
            std::fprintf(stderr, fmt, a...);
    }

    // Receives one whole multipart message, however malformed, so the next read starts at
    // a message boundary. Returns false when nothing is waiting.
    bool handle_one() {
        frames msg;
        std::string problem;
        std::size_t count = 0;
        int more = 1;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, sock_, count == 0 ? ZMQ_DONTWAIT : 0) < 0) {
                int e = zmq_errno();
                zmq_msg_close(&m);
                if (count == 0 && (e == EAGAIN || e == EINTR))
                    return false;
                if (e == EINTR)
                    continue;  // a signal in the middle of a multipart message
                throw std::system_error(e, std::generic_category(), "jobserver: zmq_msg_recv");
            }
            more = zmq_msg_more(&m);
            std::size_t size = zmq_msg_size(&m);
            // Frame 0 is the routing id, which libzmq makes; the body frames are the client's.
            if (count > 0 && size > o_.max_frame && problem.empty())
                problem = "frame " + std::to_string(count) + " is " + std::to_string(size) +
                          " bytes, more than the limit of " + std::to_string(o_.max_frame);
            if (count > o_.max_args + 2 && problem.empty())
                problem = "more than " + std::to_string(o_.max_args) + " arguments";
            if (problem.empty() || count == 0)
                msg.emplace_back(static_cast<const char*>(zmq_msg_data(&m)), size);
            zmq_msg_close(&m);
            ++count;
        }
        std::string client = std::move(msg[0]);
        bool delimiter = msg.size() > 1 && msg[1].empty();
        frames body(msg.begin() + (delimiter ? 2 : 1), msg.end());
        if (!problem.empty()) {
            reply(client, delimiter, {"error", problem});
            return true;
        }
        if (body.empty()) {
            reply(client, delimiter, {"error", "empty request"});
        } else if (body[0] == "run") {
            body.erase(body.begin());
            run(client, delimiter, std::move(body));
        } else if (body[0] == "cancel") {
            cancel(client, delimiter, body);
        } else if (body[0] == "ping") {
            reply(client, delimiter,
                  {"pong", "running=" + std::to_string(running_) +
                               " queued=" + std::to_string(queue_.size()) +
                               " finished=" + std::to_string(finished_)});
        } else {
            reply(client, delimiter, {"error", "unknown request type '" + body[0] + "'"});
        }
        return true;
    }

    void run(const std::string& client, bool delimiter, frames argv) {
        if (shutting_down_)
            return reply(client, delimiter, {"error", "shutting down"});
        if (argv.empty())
            return reply(client, delimiter, {"error", "run: empty argv"});
        if (argv[0].empty())
            return reply(client, delimiter, {"error", "run: empty program name"});
        for (const auto& a : argv) {
            if (a.find('\0') != std::string::npos)
                return reply(client, delimiter, {"error", "run: an argument contains a NUL byte"});
        }
        if (!runnable(argv[0]))
            return reply(client, delimiter,
                         {"error", "run: no such program, or not executable: " + argv[0]});
        bool start_now = running_ < o_.max_jobs;
        if (!start_now && queue_.size() >= o_.max_queue)
            return reply(client, delimiter, {"error", "run: queue full"});

        auto j = std::make_unique<job>();
        j->id = next_id_;
        j->client = client;
        j->delimiter = delimiter;
        j->argv = std::move(argv);
        if (start_now) {
            try {
                start(*j);
            } catch (const std::system_error& e) {
                return reply(client, delimiter, {"error", std::string("run: ") + e.what()});
            }
        }
        ++next_id_;
        std::uint64_t id = j->id;
        jobs_.emplace(id, std::move(j));
        if (!start_now)
            queue_.push_back(id);
        reply(client, delimiter, {"accepted", std::to_string(id)});
    }

    void cancel(const std::string& client, bool delimiter, const frames& body) {
        if (body.size() != 2)
            return reply(client, delimiter, {"error", "cancel: expected one job id"});
        char* end = nullptr;
        errno = 0;
        unsigned long long id = std::strtoull(body[1].c_str(), &end, 10);
        if (errno || body[1].empty() || *end || body[1][0] == '-')
            return reply(client, delimiter, {"error", "cancel: bad job id '" + body[1] + "'"});
        auto it = jobs_.find(id);
        if (it == jobs_.end())
            return reply(client, delimiter, {"error", "cancel: no such job " + body[1]});
        job& j = *it->second;
        if (j.running) {
            if (!j.cancelled) {
                j.cancelled = true;
                j.proc.terminate(o_.grace);
                log("job %llu: cancelled, terminating\n", id);
            }
            return reply(client, delimiter, {"ok", body[1]});
        }
        for (auto q = queue_.begin(); q != queue_.end(); ++q) {
            if (*q == id) {
                queue_.erase(q);
                break;
            }
        }
        log("job %llu: cancelled before it started\n", id);
        reply(client, delimiter, {"ok", body[1]});
        send_result(j, "cancelled", "", "");
        jobs_.erase(it);
    }

    // Spawns the job. Throws std::system_error from spawn() (ENOENT, EACCES, EAGAIN...).
    void start(job& j) {
        zreap::spawn_options so;
        so.argv = j.argv;
        so.stdin_mode = zreap::stdio::null;
        so.stdout_mode = zreap::stdio::pipe;
        so.stderr_mode = zreap::stdio::pipe;
        std::uint64_t id = j.id;
        j.proc = zreap::spawn(lp_, so, [this, id](const zreap::exit_status& s) { on_exit(id, s); });
        j.running = true;
        ++running_;
        j.out.source =
            lp_.add_fd(j.proc.stdout_fd(), ZMQ_POLLIN, [this, id](short) { pump(id, false); });
        j.err.source =
            lp_.add_fd(j.proc.stderr_fd(), ZMQ_POLLIN, [this, id](short) { pump(id, true); });
        log("job %llu: started, pid %d: %s\n", static_cast<unsigned long long>(id),
            static_cast<int>(j.proc.pid()), j.argv[0].c_str());
    }

    // Reads what a pipe holds now. Past the cap the bytes are still read, so that a chatty
    // child never blocks on a full pipe, and dropped. EOF ends the pipe's source.
    void drain(job& j, bool is_err, bool until_empty) {
        capture& c = is_err ? j.err : j.out;
        if (!c.source)
            return;
        int fd = is_err ? j.proc.stderr_fd() : j.proc.stdout_fd();
        char buf[65536];
        // While the child runs, a few reads per wakeup keep one busy pipe from starving the
        // rest of the loop. After its exit, read what it left behind: at most a pipe's
        // capacity (1 MiB at Linux's default pipe-max-size), unless a grandchild that holds
        // the write end keeps writing, and that must not keep us here for ever.
        const int max_reads = until_empty ? 16 : 4;
        for (int reads = 0; reads < max_reads; ++reads) {
            ssize_t n = ::read(fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno == EAGAIN)
                return;
            if (n <= 0) {  // EOF, or an error that no retry will cure
                lp_.remove(c.source);
                c.source = 0;
                return;
            }
            std::size_t room = o_.output_cap - std::min(o_.output_cap, c.data.size());
            std::size_t keep = std::min(room, static_cast<std::size_t>(n));
            c.data.append(buf, keep);
            if (keep < static_cast<std::size_t>(n))
                c.truncated = true;
        }
    }

    void pump(std::uint64_t id, bool is_err) {
        auto it = jobs_.find(id);
        if (it != jobs_.end())
            drain(*it->second, is_err, false);
    }

    void on_exit(std::uint64_t id, const zreap::exit_status& s) {
        retired_.clear();
        auto it = jobs_.find(id);
        if (it == jobs_.end())
            return;
        job& j = *it->second;
        // The child is gone, so whatever it wrote is in the pipes now. A grandchild may
        // still hold a write end open: take what is there and stop listening, rather than
        // wait for an EOF that may never come.
        for (bool is_err : {false, true}) {
            drain(j, is_err, true);
            capture& c = is_err ? j.err : j.out;
            if (c.source)
                lp_.remove(c.source);
            c.source = 0;
        }
        ::close(j.proc.release_stdout());
        ::close(j.proc.release_stderr());
        std::string flags;
        if (j.cancelled)
            flags += "cancelled ";
        if (shutting_down_)
            flags += "shutdown ";
        if (s.core_dumped())
            flags += "core-dumped ";
        if (!flags.empty())
            flags.pop_back();
        if (s.signaled())
            send_result(j, "signal", std::to_string(s.term_signal()), flags);
        else if (s.exited())
            send_result(j, "exit", std::to_string(s.exit_code()), flags);
        else
            send_result(j, "error", "exit status unknown (reaped elsewhere)", flags);
        log("job %llu: %s\n", static_cast<unsigned long long>(id), zreap::to_string(s).c_str());
        --running_;
        // Destroying the child object inside its own exit callback is left to the next
        // round: keep it until then.
        retired_.push_back(std::move(it->second));
        jobs_.erase(it);
        start_queued();
        if (shutting_down_ && running_ == 0)
            lp_.stop();
    }

    void start_queued() {
        while (running_ < o_.max_jobs && !queue_.empty() && !shutting_down_) {
            std::uint64_t id = queue_.front();
            queue_.pop_front();
            auto it = jobs_.find(id);
            try {
                start(*it->second);
            } catch (const std::system_error& e) {
                send_result(*it->second, "error", e.what(), "");
                jobs_.erase(it);
            }
        }
    }

    void send_result(job& j, const std::string& outcome, const std::string& detail,
                     std::string flags) {
        if (j.out.truncated)
            flags += flags.empty() ? "stdout-truncated" : " stdout-truncated";
        if (j.err.truncated)
            flags += flags.empty() ? "stderr-truncated" : " stderr-truncated";
        ++finished_;
        reply(j.client, j.delimiter,
              {"result", std::to_string(j.id), outcome, detail, j.out.data, j.err.data, flags});
    }

    // Sends without blocking. The send high-water mark is raised at start-up so that a
    // client reading slowly still gets every reply; a client that has gone away is dropped
    // by the ROUTER socket, which is all that can be done for it.
    void reply(const std::string& client, bool delimiter, const frames& body) {
        auto send = [&](const std::string& f, bool more) {
            int flags = ZMQ_DONTWAIT | (more ? ZMQ_SNDMORE : 0);
            while (zmq_send(sock_, f.data(), f.size(), flags) < 0) {
                if (zmq_errno() == EINTR)
                    continue;
                log("jobserver: reply dropped: %s\n", zmq_strerror(zmq_errno()));
                return false;
            }
            return true;
        };
        if (!send(client, true))
            return;
        if (delimiter && !send(std::string(), true))
            return;
        for (std::size_t i = 0; i < body.size(); ++i) {
            if (!send(body[i], i + 1 < body.size()))
                return;
        }
    }

    const options& o_;
    void* sock_;
    zreap::loop& lp_;
    std::map<std::uint64_t, std::unique_ptr<job>> jobs_;  // running and queued
    std::deque<std::uint64_t> queue_;
    std::vector<std::unique_ptr<job>> retired_;
    std::uint64_t next_id_ = 1;
    std::size_t running_ = 0;
    std::uint64_t finished_ = 0;
    bool shutting_down_ = false;
};

int run(const options& o) {
    examples::signal_pipe sigs;
    zreap::loop lp = o.backend ? zreap::loop(*o.backend) : zreap::loop();

    void* ctx = zmq_ctx_new();
    void* sock = zmq_socket(ctx, ZMQ_ROUTER);
    // Replies still queued at shutdown get this long to reach their clients.
    int linger = 2000;
    int hwm = 100000;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    // Past this size libzmq drops the connection before the message reaches us; below it,
    // an oversized frame gets an error reply (see --max-frame).
    std::int64_t max_msg = static_cast<std::int64_t>(o.max_frame) * 4 + (1 << 20);
    zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg);
    if (zmq_bind(sock, o.endpoint.c_str()) != 0) {
        std::fprintf(stderr, "jobserver: bind %s: %s\n", o.endpoint.c_str(),
                     zmq_strerror(zmq_errno()));
        zmq_close(sock);
        zmq_ctx_term(ctx);
        return 1;
    }
    char bound[256];
    std::size_t bound_len = sizeof bound;
    zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, bound, &bound_len);
    // The first line of stdout says where to connect, so that a test can bind port 0 ("*").
    std::printf("jobserver: listening on %s (backend %s, %zu jobs at once)\n", bound,
                std::string(zreap::to_string(lp.which())).c_str(), o.max_jobs);
    std::fflush(stdout);

    server srv(o, sock, lp);
    lp.add_socket(sock, ZMQ_POLLIN, [&](short) { srv.on_socket(); });
    lp.add_fd(sigs.fd(), ZMQ_POLLIN, [&](short) {
        if (int sig = sigs.take())
            srv.shut_down(sig);
    });
    lp.run();

    std::printf("jobserver: stopped\n");
    std::fflush(stdout);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    options o = parse(argc, argv);
    try {
        return run(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "jobserver: %s\n", e.what());
        return 1;
    }
}
