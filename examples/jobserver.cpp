// A job server: clients send a command line over ZeroMQ, the server runs it in a child
// process and sends back its exit status and its captured output. Sockets, pipes, child
// exits, grace timers, the CURVE handshake checks and SIGINT/SIGTERM all arrive through
// one zreap loop.
//
//   jobserver [--endpoint EP] [--backend NAME] [--max-jobs N] [--max-queue N]
//             [--output-cap BYTES] [--max-frame BYTES] [--max-request BYTES] [--max-args N]
//             [--client-buffer BYTES] [--grace MS] [--curve-secret FILE --curve-clients FILE]
//             [--allow-programs FILE] [--quiet]
//   jobserver --keygen PREFIX
//
// Protocol (a ROUTER socket; clients are DEALER sockets, since one request can have two
// replies). A request is a multipart message. If its first frame is empty it is taken as an
// envelope delimiter (what a REQ socket adds) and every reply carries one back.
//
//   run PROG ARG...   -> "accepted" ID            at once, or "error" MESSAGE
//                     -> "result" ID OUTCOME DETAIL STDOUT STDERR FLAGS   when it ends
//   cancel ID         -> "ok" ID                  or "error" MESSAGE (only the client that
//                                                 ran the job may cancel it)
//   ping              -> "pong" "running=N queued=N finished=N dropped=N requests=N"
//   anything else     -> "error" MESSAGE
//
// On one connection the immediate replies ("accepted", "ok", "pong", "error") come in the
// order of the requests; "result" messages arrive in between, whenever a job ends. Every
// accepted job gets exactly one "result", unless its client's connection closes first (its
// jobs are then ended and their results dropped) or the client stops reading (results past
// --client-buffer bytes of replies waiting are dropped); the log says which were dropped.
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
//
// Each job runs in a process group of its own; cancel and shutdown end the whole group.
// docs/examples.md describes the program, docs/security.md what it defends against.

#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <zreap/zreap.hpp>

#include "connection_tracker.hpp"
#include "curve_keys.hpp"
#include "job_warden.hpp"
#include "jobserver_access.hpp"

namespace {

using namespace std::chrono_literals;

struct options {
    std::string endpoint = "tcp://127.0.0.1:5433";
    std::optional<zreap::backend> backend;
    std::size_t max_jobs = 8;
    std::size_t max_queue = 1000;
    std::size_t output_cap = 64 * 1024;
    std::size_t max_frame = 64 * 1024;
    std::size_t max_request = 64 * 1024;
    std::size_t max_args = 256;
    std::size_t client_buffer = 8 * 1024 * 1024;
    std::chrono::milliseconds grace{2000};
    std::string curve_secret;
    std::string curve_clients;
    std::string allow_programs;
    std::string keygen;
    bool quiet = false;
};

[[noreturn]] void usage(const std::string& why) {
    std::fprintf(stderr,
                 "jobserver: %s\n"
                 "usage: jobserver [--endpoint EP] [--backend NAME] [--max-jobs N] "
                 "[--max-queue N]\n"
                 "                 [--output-cap BYTES] [--max-frame BYTES] "
                 "[--max-request BYTES]\n"
                 "                 [--max-args N] [--client-buffer BYTES] [--grace MS]\n"
                 "                 [--curve-secret FILE --curve-clients FILE] "
                 "[--allow-programs FILE] [--quiet]\n"
                 "       jobserver --keygen PREFIX\n",
                 why.c_str());
    std::exit(2);
}

// A decimal number from @p min to @p max, digits only (no sign, no spaces).
std::size_t number(const char* s, const std::string& what, std::size_t min, std::size_t max) {
    std::string text = s;
    bool digits = !text.empty() && text.size() <= 19 &&
                  text.find_first_not_of("0123456789") == std::string::npos;
    unsigned long long v = digits ? std::strtoull(s, nullptr, 10) : 0;
    if (!digits || v < min || v > max)
        usage("bad value for " + what + " '" + text + "' (" + std::to_string(min) + " to " +
              std::to_string(max) + ")");
    return static_cast<std::size_t>(v);
}

options parse(int argc, char** argv) {
    options o;
    constexpr std::size_t mib = 1024 * 1024;
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
            o.max_jobs = number(next(), a, 1, 10000);
        } else if (a == "--max-queue") {
            o.max_queue = number(next(), a, 0, 1000000);
        } else if (a == "--output-cap") {
            o.output_cap = number(next(), a, 0, 1024 * mib);
        } else if (a == "--max-frame") {
            o.max_frame = number(next(), a, 1, 1024 * mib);
        } else if (a == "--max-request") {
            o.max_request = number(next(), a, 1, 1024 * mib);
        } else if (a == "--max-args") {
            o.max_args = number(next(), a, 0, 1000000);
        } else if (a == "--client-buffer") {
            o.client_buffer = number(next(), a, 4096, 1024 * mib);
        } else if (a == "--grace") {
            o.grace = std::chrono::milliseconds(number(next(), a, 0, 86400000));
        } else if (a == "--curve-secret") {
            o.curve_secret = next();
        } else if (a == "--curve-clients") {
            o.curve_clients = next();
        } else if (a == "--allow-programs") {
            o.allow_programs = next();
        } else if (a == "--keygen") {
            o.keygen = next();
        } else if (a == "--quiet") {
            o.quiet = true;
        } else {
            usage("unknown argument " + a);
        }
    }
    if (o.curve_secret.empty() != o.curve_clients.empty())
        usage("--curve-secret and --curve-clients go together");
    return o;
}

// One captured stream of a running job.
struct capture {
    std::string data;
    bool truncated = false;
    zreap::source_id source = 0;  // 0 once EOF was read
};

struct job {
    std::uint64_t id = 0;
    std::string client;  // ROUTER routing id of the connection it came on: gets its result
    std::string owner;   // who may cancel it: the client's CURVE key, or that connection
    bool delimiter = false;
    std::vector<std::string> argv;
    zreap::child proc;
    bool running = false;
    bool cancelled = false;
    bool orphaned = false;  // its client's connection closed: nobody to send the result to
    capture out, err;
};

// What the server needs besides its options and socket.
struct server_parts {
    zreap::loop& lp;
    examples::job_warden& warden;
    examples::connection_tracker& conns;
    const examples::program_allow_list* allow = nullptr;  // none: any program
    bool curve = false;
};

class server {
  public:
    server(const options& o, void* sock, server_parts parts)
        : o_(o),
          sock_(sock),
          lp_(parts.lp),
          warden_(parts.warden),
          conns_(parts.conns),
          allow_(parts.allow),
          curve_(parts.curve) {}

    // Reads and answers up to a batch of requests; the socket is level-triggered, so the
    // loop calls again for the rest after it has looked at pipes and exits.
    void on_socket() {
        retired_.clear();
        connections_closed(conns_.drain());
        if (!outboxes_.empty())
            flush();  // older replies first
        for (int i = 0; i < 64; ++i) {
            if (!handle_one())
                return;
        }
    }

    // The socket monitor has news: end the jobs of clients whose connection closed.
    void on_monitor() { connections_closed(conns_.drain()); }

    // SIGINT/SIGTERM: no new jobs; queued jobs are answered "cancelled"; running ones get
    // SIGTERM, then SIGKILL after the grace period, as whole process groups; the loop ends
    // once the last one is reaped.
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
        for (auto& [id, j] : jobs_)
            end_job(*j);
        stop_when_done();
    }

    // The warden is gone: jobs are still ended by cancel and shutdown, but no longer when
    // the server dies.
    void warden_lost(const zreap::exit_status& s) {
        warden_.lost();
        std::fprintf(stderr,
                     "jobserver: the job warden exited (%s); from now on jobs outlive a server "
                     "that is killed\n",
                     zreap::to_string(s).c_str());
    }

  private:
    using frames = std::vector<std::string>;

    // A line on stderr, unless --quiet. (this is argument 1 for the format check.)
    [[gnu::format(printf, 2, 3)]] void log(const char* fmt, ...) const {
        if (o_.quiet)
            return;
        va_list ap;
        va_start(ap, fmt);
        std::vfprintf(stderr, fmt, ap);
        va_end(ap);
    }

    // Receives one whole multipart message, however malformed, so the next read starts at
    // a message boundary. Returns false when nothing is waiting.
    bool handle_one() {
        std::string client;  // frame 0: the routing id, which libzmq makes
        frames body;
        bool delimiter = false;
        std::string problem, user;
        int fd = -1;
        std::size_t count = 0, bytes = 0;
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
            const char* data = static_cast<const char*>(zmq_msg_data(&m));
            if (count == 0) {
                client.assign(data, size);
            } else {
                if (count == 1) {
                    fd = zmq_msg_get(&m, ZMQ_SRCFD);
                    if (const char* uid = zmq_msg_gets(&m, "User-Id"))
                        user = uid;
                }
                if (count == 1 && size == 0) {
                    delimiter = true;
                } else if (problem.empty()) {
                    // Stop keeping frames at the first limit passed; the rest is read and
                    // dropped. libzmq has closed the connection already for a frame over
                    // --max-frame (ZMQ_MAXMSGSIZE); this check covers inproc, which it
                    // does not limit.
                    bytes += size;
                    if (size > o_.max_frame)
                        problem = "a frame of " + std::to_string(size) +
                                  " bytes, more than the limit of " + std::to_string(o_.max_frame);
                    else if (bytes > o_.max_request)
                        problem =
                            "a request of more than " + std::to_string(o_.max_request) + " bytes";
                    else if (body.size() >= o_.max_args + 2)  // type, program, arguments
                        problem = "more than " + std::to_string(o_.max_args) + " arguments";
                    else
                        body.emplace_back(data, size);
                }
            }
            zmq_msg_close(&m);
            ++count;
        }
        ++requests_;
        // The monitor events queued before this message was received are read first, so
        // that the client is filed under the right connection (connection_tracker.hpp).
        connections_closed(conns_.drain());
        if (!conns_.message_from(client, fd)) {
            log("jobserver: dropped a request from a client whose connection has closed\n");
            return true;
        }
        // A routing id that the client chose itself could be chosen by another client to
        // take over its replies: only libzmq's own (5 bytes, the first 0) are served.
        if (client.size() != 5 || client[0] != '\0') {
            refuse(client, delimiter, "clients must not set ZMQ_ROUTING_ID");
            return true;
        }
        if (!problem.empty()) {
            refuse(client, delimiter, problem);
            return true;
        }
        std::string owner = curve_ ? "key " + user : "connection " + hex(client);
        if (body.empty()) {
            reply(client, delimiter, {"error", "empty request"});
        } else if (body[0] == "run") {
            body.erase(body.begin());
            run(client, delimiter, owner, std::move(body));
        } else if (body[0] == "cancel") {
            cancel(client, delimiter, owner, body);
        } else if (body[0] == "ping") {
            reply(client, delimiter,
                  {"pong", "running=" + std::to_string(running_) +
                               " queued=" + std::to_string(queue_.size()) + " finished=" +
                               std::to_string(finished_) + " dropped=" + std::to_string(dropped_) +
                               " requests=" + std::to_string(requests_)});
        } else {
            reply(client, delimiter, {"error", "unknown request type '" + body[0] + "'"});
        }
        return true;
    }

    void refuse(const std::string& client, bool delimiter, const std::string& why) {
        reply(client, delimiter, {"error", why});
    }

    static std::string hex(const std::string& s) {
        static const char digits[] = "0123456789abcdef";
        std::string h;
        for (unsigned char c : s) {
            h += digits[c >> 4];
            h += digits[c & 15];
        }
        return h;
    }

    void run(const std::string& client, bool delimiter, const std::string& owner, frames argv) {
        if (shutting_down_)
            return refuse(client, delimiter, "shutting down");
        if (argv.empty())
            return refuse(client, delimiter, "run: empty argv");
        if (argv[0].empty())
            return refuse(client, delimiter, "run: empty program name");
        for (const auto& a : argv) {
            if (a.find('\0') != std::string::npos)
                return refuse(client, delimiter, "run: an argument contains a NUL byte");
        }
        // Checked when the request arrives, so a client hears "no such program" at once
        // even when its job would wait in the queue; spawn() still reports the real exec
        // error if the file goes away meanwhile.
        std::string path = examples::find_program(argv[0]);
        if (path.empty())
            return refuse(client, delimiter, "run: no such program, or not executable: " + argv[0]);
        if (allow_) {
            if (!allow_->allows(path)) {
                std::fprintf(stderr, "jobserver: refused %s from %s: not in the allow-list\n",
                             argv[0].c_str(), owner.c_str());
                return refuse(client, delimiter, "run: program not allowed: " + argv[0]);
            }
            argv[0] = path;  // run exactly the file that was checked, not a later PATH match
        }
        // A client that leaves its replies unread gets no more work whose results would
        // only be dropped.
        auto waiting = outboxes_.find(client);
        if (waiting != outboxes_.end() && waiting->second.bytes > o_.client_buffer / 2)
            return refuse(client, delimiter,
                          "run: " + std::to_string(waiting->second.bytes) +
                              " bytes of replies wait for this client, which is not reading them");
        bool start_now = running_ < o_.max_jobs;
        if (!start_now && queue_.size() >= o_.max_queue)
            return refuse(client, delimiter, "run: queue full");

        // "accepted" goes out before the job starts: a client whose replies cannot be
        // delivered (gone, or --client-buffer bytes waiting) gets no job it cannot hear of.
        std::uint64_t id = next_id_;
        if (!reply(client, delimiter, {"accepted", std::to_string(id)}))
            return;
        ++next_id_;
        auto j = std::make_unique<job>();
        j->id = id;
        j->client = client;
        j->owner = owner;
        j->delimiter = delimiter;
        j->argv = std::move(argv);
        if (start_now) {
            try {
                start(*j);
            } catch (const std::system_error& e) {
                send_result(*j, "error", e.what(), "");
                return;
            }
        }
        jobs_.emplace(id, std::move(j));
        if (!start_now)
            queue_.push_back(id);
    }

    void cancel(const std::string& client, bool delimiter, const std::string& owner,
                const frames& body) {
        if (body.size() != 2)
            return refuse(client, delimiter, "cancel: expected one job id");
        const std::string& text = body[1];
        // Digits only: strtoull alone would take " 7", "+7" and "-7" too.
        bool digits = !text.empty() && text.size() <= 19 &&
                      text.find_first_not_of("0123456789") == std::string::npos;
        if (!digits)
            return refuse(client, delimiter, "cancel: bad job id '" + text + "'");
        std::uint64_t id = std::strtoull(text.c_str(), nullptr, 10);
        auto it = jobs_.find(id);
        if (it == jobs_.end())
            return refuse(client, delimiter, "cancel: no such job " + text);
        job& j = *it->second;
        if (j.owner != owner) {
            std::fprintf(stderr, "jobserver: %s may not cancel job %s of %s\n", owner.c_str(),
                         text.c_str(), j.owner.c_str());
            return refuse(client, delimiter, "cancel: job " + text + " is not yours");
        }
        if (j.running) {
            if (!j.cancelled)
                log("job %s: cancelled, terminating its process group\n", text.c_str());
            end_job(j);
            reply(client, delimiter, {"ok", text});
            return;
        }
        dequeue(id);
        log("job %s: cancelled before it started\n", text.c_str());
        reply(client, delimiter, {"ok", text});
        send_result(j, "cancelled", "", "");
        jobs_.erase(it);
    }

    void dequeue(std::uint64_t id) {
        for (auto q = queue_.begin(); q != queue_.end(); ++q) {
            if (*q == id) {
                queue_.erase(q);
                return;
            }
        }
    }

    // SIGTERM to the job's whole process group now, SIGKILL after the grace period.
    void end_job(job& j) {
        if (j.cancelled || !j.running)
            return;
        j.cancelled = true;
        j.proc.terminate(o_.grace);
    }

    // Nobody can receive the results of these clients' jobs any more: a DEALER that
    // reconnects gets a new routing id. Their queued jobs are dropped, their running jobs
    // ended like a cancel, and no result is sent.
    void connections_closed(const std::vector<std::string>& clients) {
        for (const std::string& client : clients) {
            drop_outbox(client, "its connection closed");
            std::size_t ended = 0;
            for (auto it = jobs_.begin(); it != jobs_.end();) {
                job& j = *it->second;
                if (j.client != client) {
                    ++it;
                    continue;
                }
                ++ended;
                ++dropped_;
                if (!j.running) {
                    dequeue(j.id);
                    it = jobs_.erase(it);
                    continue;
                }
                j.orphaned = true;
                end_job(j);
                ++it;
            }
            if (ended)
                log("jobserver: connection %s closed; ended its %zu job%s, whose results are "
                    "dropped\n",
                    hex(client).c_str(), ended, ended == 1 ? "" : "s");
        }
    }

    // Spawns the job. Throws std::system_error from spawn() (ENOENT, EACCES, EAGAIN...).
    void start(job& j) {
        zreap::spawn_options so;
        so.argv = j.argv;
        so.stdin_mode = zreap::stdio::null;
        so.stdout_mode = zreap::stdio::pipe;
        so.stderr_mode = zreap::stdio::pipe;
        // Its own process group: cancel and shutdown signal the whole group, and a Ctrl-C
        // at the server's terminal (sent to the server's group) does not reach the jobs.
        so.group = zreap::spawn_options::group_mode::new_group;
#ifdef __linux__
        // If the server dies, the kernel kills the job's leader; the warden the rest of its
        // group. The signal comes when the spawning thread ends: this one runs the loop.
        so.parent_death_signal = SIGKILL;
#endif
        std::uint64_t id = j.id;
        j.proc = zreap::spawn(lp_, so, [this, id](const zreap::exit_status& s) { on_exit(id, s); });
        j.running = true;
        ++running_;
        if (!warden_.track(j.proc.pid()) && warden_.alive())
            std::fprintf(
                stderr,
                "job %llu: the warden could not be told; it would outlive a killed server\n",
                static_cast<unsigned long long>(id));
        j.out.source =
            lp_.add_fd(j.proc.stdout_fd(), ZMQ_POLLIN, [this, id](short) { pump(id, false); });
        j.err.source =
            lp_.add_fd(j.proc.stderr_fd(), ZMQ_POLLIN, [this, id](short) { pump(id, true); });
        log("job %llu: started, pid %d: %s\n", static_cast<unsigned long long>(id),
            static_cast<int>(j.proc.pid()), j.argv[0].c_str());
    }

    // Reads what a pipe holds now. Past the cap the bytes are still read, so that a chatty
    // child never blocks on a full pipe, and dropped. EOF ends the pipe's source.
    void drain(job& j, bool is_err) {
        capture& c = is_err ? j.err : j.out;
        if (!c.source)
            return;
        int fd = is_err ? j.proc.stderr_fd() : j.proc.stdout_fd();
        char buf[65536];
        // A few reads per wakeup keep one busy pipe from starving the rest of the loop.
        // What the child left behind when it exited is delivered before its exit callback
        // (the library waits for it: watch_options::drain_first).
        for (int reads = 0; reads < 4; ++reads) {
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
            drain(*it->second, is_err);
    }

    void on_exit(std::uint64_t id, const zreap::exit_status& s) {
        retired_.clear();
        auto it = jobs_.find(id);
        if (it == jobs_.end())
            return;
        job& j = *it->second;
        warden_.untrack(j.proc.pid());
        // Everything the child wrote before it exited has been read. A grandchild may
        // still hold a write end open: stop listening rather than wait for an EOF that may
        // never come.
        for (capture* c : {&j.out, &j.err}) {
            if (c->source)
                lp_.remove(c->source);
            c->source = 0;
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
        log("job %llu: %s\n", static_cast<unsigned long long>(id), zreap::to_string(s).c_str());
        if (j.orphaned)
            log("job %llu: result dropped: its client's connection closed\n",
                static_cast<unsigned long long>(id));
        else if (s.signaled())
            send_result(j, "signal", std::to_string(s.term_signal()), flags);
        else if (s.exited())
            send_result(j, "exit", std::to_string(s.exit_code()), flags);
        else
            send_result(j, "error", "exit status unknown (reaped elsewhere)", flags);
        --running_;
        // Destroying the child object inside its own exit callback is left to the next
        // round: keep it until then.
        retired_.push_back(std::move(it->second));
        jobs_.erase(it);
        start_queued();
        stop_when_done();
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

    // Replies that libzmq has not taken yet for one client, oldest first.
    struct outbox {
        std::deque<frames> replies;  // a delimiter in front where the request had one
        std::size_t bytes = 0;
    };

    static std::size_t size_of(const frames& msg) {
        std::size_t n = 64;  // what libzmq keeps per message besides the data, roughly
        for (const auto& f : msg)
            n += f.size() + 64;
        return n;
    }

    enum class sent { yes, full, gone };

    // Hands one reply to libzmq without blocking. ZMQ_ROUTER_MANDATORY makes libzmq say
    // why it cannot instead of dropping the reply silently: EHOSTUNREACH, the client is
    // gone; EAGAIN, its pipe holds ZMQ_SNDHWM messages already.
    sent send_now(const std::string& client, const frames& msg) {
        auto frame = [&](const std::string& f, bool more) {
            int flags = ZMQ_DONTWAIT | (more ? ZMQ_SNDMORE : 0);
            while (zmq_send(sock_, f.data(), f.size(), flags) < 0) {
                if (zmq_errno() != EINTR)
                    return false;
            }
            return true;
        };
        if (!frame(client, true)) {
            if (zmq_errno() != EAGAIN)
                return sent::gone;
            // The socket learns that libzmq's I/O thread has taken messages out of the pipe
            // only when it processes its commands, which a run of sends does at most about
            // once a millisecond: a burst of replies can find the pipe "full" while it is
            // empty. Reading ZMQ_EVENTS processes the commands now; then one more try.
            int events = 0;
            std::size_t len = sizeof events;
            zmq_getsockopt(sock_, ZMQ_EVENTS, &events, &len);
            if (!frame(client, true))
                return zmq_errno() == EAGAIN ? sent::full : sent::gone;
        }
        // Past the routing id, libzmq has picked the client's pipe and takes every frame.
        for (std::size_t i = 0; i < msg.size(); ++i)
            frame(msg[i], i + 1 < msg.size());
        return sent::yes;
    }

    // Sends a reply, or keeps it in the client's outbox while libzmq's pipe to the client
    // is full. False if it was dropped: the client is gone, or --client-buffer bytes are
    // waiting for it already, so it is not reading, and what the server keeps for it stays
    // bounded (this plus ZMQ_SNDHWM replies in libzmq, a number set to fit the same size).
    bool reply(const std::string& client, bool delimiter, const frames& body) {
        frames msg;
        if (delimiter)
            msg.emplace_back();
        msg.insert(msg.end(), body.begin(), body.end());
        auto it = outboxes_.find(client);
        if (it == outboxes_.end()) {  // nothing waiting ahead of it
            sent r = send_now(client, msg);
            if (r == sent::yes)
                return true;
            if (r == sent::gone) {
                dropped(client, body, "the client is gone");
                return false;
            }
        }
        outbox& ob = outboxes_[client];
        std::size_t size = size_of(msg);
        if (ob.bytes + size > o_.client_buffer) {
            dropped(client, body, "the client is not reading its replies");
            if (ob.replies.empty())
                outboxes_.erase(client);
            return false;
        }
        ob.replies.push_back(std::move(msg));
        ob.bytes += size;
        if (!flush_timer_)
            retry_flush(flush_min);
        return true;
    }

    // Moves what waits in the outboxes on to libzmq, as far as it takes it.
    // While replies wait, they are offered to libzmq again after 5 ms, and after twice as
    // long each time libzmq took none, up to half a second: a client that reads nothing
    // costs the server two wakeups a second, not two hundred.
    static constexpr std::chrono::milliseconds flush_min{5}, flush_max{500};

    void retry_flush(std::chrono::milliseconds delay) {
        if (flush_timer_)
            lp_.remove(flush_timer_);
        flush_delay_ = delay;
        flush_timer_ = lp_.add_timer(delay, 0ms, [this] {
            flush_timer_ = 0;
            flush();
        });
    }

    void flush() {
        bool moved = false;
        for (auto it = outboxes_.begin(); it != outboxes_.end();) {
            outbox& ob = it->second;
            while (!ob.replies.empty()) {
                sent r = send_now(it->first, ob.replies.front());
                if (r == sent::full)
                    break;
                moved = true;
                if (r == sent::gone) {
                    drop_outbox(it->first, "the client is gone");
                    break;
                }
                ob.bytes -= size_of(ob.replies.front());
                ob.replies.pop_front();
            }
            it = ob.replies.empty() ? outboxes_.erase(it) : std::next(it);
        }
        if (outboxes_.empty()) {
            if (flush_timer_)
                lp_.remove(flush_timer_);
            flush_timer_ = 0;
        } else if (moved || !flush_timer_) {
            retry_flush(moved ? flush_min : std::min(flush_delay_ * 2, flush_max));
        }
        stop_when_done();
    }

    void drop_outbox(const std::string& client, const char* why) {
        auto it = outboxes_.find(client);
        if (it == outboxes_.end() || it->second.replies.empty())
            return;
        dropped_ += it->second.replies.size();
        std::fprintf(stderr, "jobserver: %zu replies waiting for %s dropped: %s\n",
                     it->second.replies.size(), hex(client).c_str(), why);
        it->second.replies.clear();
        it->second.bytes = 0;
    }

    // During shutdown, the loop ends once no job runs and every reply has gone to libzmq
    // (whose linger then gives them two seconds to reach their clients), or two seconds
    // after the last job if some client does not take its replies.
    void stop_when_done() {
        if (!shutting_down_ || running_ > 0)
            return;
        if (outboxes_.empty()) {
            lp_.stop();
        } else if (!stop_timer_) {
            stop_timer_ = lp_.add_timer(2s, 0ms, [this] {
                for (auto& [client, ob] : outboxes_)
                    drop_outbox(client, "the server is stopping");
                lp_.stop();
            });
        }
    }

    // Logs a dropped reply, at most ten lines a second; a timer reports the rest.
    void dropped(const std::string& client, const frames& body, const char* why) {
        ++dropped_;
        auto now = std::chrono::steady_clock::now();
        if (now - drop_window_ >= 1s) {
            drop_window_ = now;
            drop_lines_ = 0;
        }
        if (drop_lines_ < 10) {
            ++drop_lines_;
            std::string what = body[0] + (body.size() > 1 && body[0] != "error" && body[0] != "pong"
                                              ? " " + body[1]
                                              : std::string());
            std::fprintf(stderr, "jobserver: reply '%s' to %s dropped: %s\n", what.c_str(),
                         hex(client).c_str(), why);
            return;
        }
        if (drops_untold_++ == 0) {
            lp_.add_timer(1s, 0ms, [this] {
                std::fprintf(stderr, "jobserver: %llu more replies dropped\n",
                             static_cast<unsigned long long>(drops_untold_));
                drops_untold_ = 0;
            });
        }
    }

    const options& o_;
    void* sock_;
    zreap::loop& lp_;
    examples::job_warden& warden_;
    examples::connection_tracker& conns_;
    const examples::program_allow_list* allow_;
    bool curve_;
    std::map<std::uint64_t, std::unique_ptr<job>> jobs_;  // running and queued
    std::deque<std::uint64_t> queue_;
    std::vector<std::unique_ptr<job>> retired_;
    std::uint64_t next_id_ = 1;
    std::size_t running_ = 0;
    std::uint64_t finished_ = 0;
    std::uint64_t dropped_ = 0;
    std::uint64_t requests_ = 0;
    std::chrono::steady_clock::time_point drop_window_{};
    int drop_lines_ = 0;
    std::uint64_t drops_untold_ = 0;
    std::map<std::string, outbox> outboxes_;  // clients with replies waiting
    zreap::source_id flush_timer_ = 0;
    std::chrono::milliseconds flush_delay_ = flush_min;
    zreap::source_id stop_timer_ = 0;
    bool shutting_down_ = false;
};

// Owns a libzmq context or socket.
struct zmq_context {
    void* ctx = zmq_ctx_new();
    ~zmq_context() { zmq_ctx_term(ctx); }
};
struct zmq_socket_owner {
    void* sock;
    ~zmq_socket_owner() { zmq_close(sock); }
};

int run(const options& o) {
    if (!o.keygen.empty()) {
        examples::curve_pair keys = examples::write_key_files(o.keygen);
        std::printf("wrote %s.key (keep it secret) and %s.pub\npublic key: %s\n", o.keygen.c_str(),
                    o.keygen.c_str(), keys.public_key.c_str());
        return 0;
    }
    bool curve = !o.curve_secret.empty();
    bool ipv6 = false;
    if (!examples::local_only_endpoint(o.endpoint, ipv6) && !curve) {
        std::fprintf(stderr,
                     "jobserver: refusing to bind %s without CURVE: anyone who can reach it "
                     "could run any command as this user. Give --curve-secret and "
                     "--curve-clients, or bind a loopback address or ipc:// "
                     "(docs/security.md).\n",
                     o.endpoint.c_str());
        return 2;
    }
    // Everything that can be wrong with the files is found before anything starts.
    examples::curve_pair server_key;
    std::unique_ptr<examples::authorized_keys> client_keys;
    if (curve) {
        server_key = examples::read_key_file(o.curve_secret, true);
        client_keys = std::make_unique<examples::authorized_keys>(o.curve_clients);
    }
    std::unique_ptr<examples::program_allow_list> allow;
    if (!o.allow_programs.empty())
        allow = std::make_unique<examples::program_allow_list>(o.allow_programs);

    zreap::loop lp = o.backend ? zreap::loop(*o.backend) : zreap::loop();
    // SIGINT and SIGTERM as loop events, owned from the start so that one that comes before
    // the loop runs is not the default death: the loop's handler notes it on whatever thread
    // the kernel picks (libzmq's included), and the shutdown runs on the loop's thread once
    // the loop runs, when the server exists.
    std::function<void(int)> on_stop_signal = [](int) {};
    for (int sig : {SIGINT, SIGTERM})
        lp.add_signal(sig, [&on_stop_signal](int signo) { on_stop_signal(signo); });
    // Forked while the process has one thread: before the zmq context starts its own.
    examples::job_warden warden;

    zmq_context zctx;
    void* ctx = zctx.ctx;
    std::unique_ptr<examples::zap_handler> zap;
    if (curve) {
        zap = std::make_unique<examples::zap_handler>(
            ctx, *client_keys,
            [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); }, o.quiet);
    }
    zmq_socket_owner router{zmq_socket(ctx, ZMQ_ROUTER)};
    void* sock = router.sock;
    // Replies still queued at shutdown get this long to reach their clients.
    int linger = 2000;
    // libzmq's own queue for a client counts messages: as many as fit in --client-buffer
    // at the largest reply size (two full outputs), at least 16. The server's outbox holds
    // up to --client-buffer bytes more for a client whose pipe is full.
    std::size_t largest_reply = 2 * o.output_cap + 4096;
    int hwm = static_cast<int>(
        std::max<std::size_t>(16, std::min<std::size_t>(100000, o.client_buffer / largest_reply)));
    int one = 1;
    // A frame over --max-frame makes libzmq close the connection before any of it is kept.
    std::int64_t max_msg = static_cast<std::int64_t>(o.max_frame);
    // A peer that stops answering heartbeats (its host or network died) is disconnected,
    // so that its jobs end like those of a client that closed its connection.
    int heartbeat_ivl = 10000, heartbeat_timeout = 30000;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg);
    zmq_setsockopt(sock, ZMQ_HEARTBEAT_IVL, &heartbeat_ivl, sizeof heartbeat_ivl);
    zmq_setsockopt(sock, ZMQ_HEARTBEAT_TIMEOUT, &heartbeat_timeout, sizeof heartbeat_timeout);
    if (ipv6)
        zmq_setsockopt(sock, ZMQ_IPV6, &one, sizeof one);
    if (curve) {
        zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one);
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, server_key.secret_key.data(), 40);
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, "jobserver", 9);
    }
    examples::connection_tracker conns(ctx, sock);
    // An ipc:// socket file is made for the owner alone: without CURVE, its permissions
    // are what keeps other local users out.
    mode_t old_umask = ::umask(077);
    int bound_ok = zmq_bind(sock, o.endpoint.c_str());
    ::umask(old_umask);
    if (bound_ok != 0) {
        std::fprintf(stderr, "jobserver: bind %s: %s\n", o.endpoint.c_str(),
                     zmq_strerror(zmq_errno()));
        return 1;
    }
    char bound[256];
    std::size_t bound_len = sizeof bound;
    zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, bound, &bound_len);
    // The first line of stdout says where to connect, so that a test can bind port 0 ("*").
    std::printf("jobserver: listening on %s (backend %s, %zu jobs at once, %s)\n", bound,
                std::string(zreap::to_string(lp.which())).c_str(), o.max_jobs,
                curve ? "CURVE" : "no authentication");
    std::fflush(stdout);
    if (curve) {
        std::fprintf(
            stderr, "jobserver: CURVE server key %s, %zu client keys authorized%s\n",
            server_key.public_key.c_str(), client_keys->size(),
            allow ? (", " + std::to_string(allow->size()) + " programs allowed").c_str() : "");
    } else if (o.endpoint.rfind("tcp://", 0) == 0) {
        std::fprintf(stderr,
                     "jobserver: no CURVE: every local user who can connect to %s can run "
                     "commands as uid %d (docs/security.md)\n",
                     bound, static_cast<int>(::geteuid()));
    }

    server srv(o, sock, {lp, warden, conns, allow.get(), curve});
    zreap::source_id warden_watch =
        lp.watch_child(warden.pid(), [&](const zreap::exit_status& s) { srv.warden_lost(s); });
    lp.add_socket(sock, ZMQ_POLLIN, [&](short) { srv.on_socket(); });
    lp.add_socket(conns.socket(), ZMQ_POLLIN, [&](short) { srv.on_monitor(); });
    if (zap)
        lp.add_socket(zap->socket(), ZMQ_POLLIN, [&](short) { zap->on_ready(); });
    on_stop_signal = [&srv](int signo) { srv.shut_down(signo); };
    lp.run();
    // The warden is reaped by its own destructor, not by the loop.
    lp.remove(warden_watch);

    std::printf("jobserver: stopped\n");
    std::fflush(stdout);
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
