// The measurements, run in a worker process for one subject at a time. The subject
// "floor" has no loop at all: a blocking waitpid() on the same kind of child, the soonest
// anyone can learn of an exit. Every other subject is a runner (runner.hpp).

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

#include "runner.hpp"
#include "scenarios.hpp"

namespace bench {

namespace {

void emit(const std::string& key, double v) {
    std::printf("S %s %.3f\n", key.c_str(), v);
}
void note(const std::string& text) {
    std::printf("N %s\n", text.c_str());
}

[[noreturn]] void fail(const std::string& what) {
    throw std::system_error(errno, std::generic_category(), what);
}

// Async-signal-safe: used in fork children.
void sleep_us(long us) {
    timespec d{us / 1'000'000, (us % 1'000'000) * 1000};
    while (::nanosleep(&d, &d) < 0 && errno == EINTR) {
    }
}

void wait_pid(pid_t pid) {
    int st;
    while (::waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            fail("waitpid");
}

void read_full(int fd, void* buf, size_t n) {
    auto* p = static_cast<char*>(buf);
    while (n > 0) {
        ssize_t r = ::read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            fail("read of the child's stamp");
        p += r;
        n -= static_cast<size_t>(r);
    }
}

struct fd_pair {
    int rd = -1, wr = -1;
    fd_pair() {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0)
            fail("pipe2");
        rd = fds[0];
        wr = fds[1];
    }
    ~fd_pair() {
        close_read();
        close_write();
    }
    fd_pair(const fd_pair&) = delete;
    fd_pair& operator=(const fd_pair&) = delete;
    void close_read() {
        if (rd >= 0)
            ::close(rd);
        rd = -1;
    }
    void close_write() {
        if (wr >= 0)
            ::close(wr);
        wr = -1;
    }
};

// A child that stays alive until the gate's write end is closed, at the lowest priority:
// the exec'd helper (`hold`), started by each subject its own way (posix_spawn + watch,
// uv_spawn, ...) and by posix_spawn for the floor. Every subject gets the same kind of
// child: a forked copy of this process takes several times longer to exit than the small
// exec'd helper, which would make the storm row measure the children, not the loop.
pid_t start_holder(runner* r, const fd_pair& gate, const std::string& helper,
                   std::function<void()> on_exit) {
    spawn_request req{{helper, "hold"}, gate.rd, -1};
    if (!r)
        return posix_spawn_child(req);
    return r->spawn(req, std::move(on_exit));
}

// When the subject noticed the exit of the child it is told to watch: @p start hands the
// subject a callback (through spawn or watch), the loop runs until that callback has run,
// and the callback's clock reading is returned.
template <typename Start>
std::int64_t noticed_at(runner& r, Start start) {
    std::int64_t t1 = 0;
    bool done = false;
    start([&] {
        t1 = now_ns();
        done = true;
    });
    r.run_until([&] { return done; });
    return t1;
}

// The floor's notice: a blocking waitpid on @p pid.
std::int64_t waited_at(pid_t pid) {
    wait_pid(pid);
    return now_ns();
}

// One exit of an exec'd child that stamps the time right before it exits, written to
// stamp.wr; returns nanoseconds from that stamp to the moment the subject noticed.
std::int64_t exec_latency(runner* r, const fd_pair& stamp, const std::string& helper, int delay) {
    spawn_request req{{helper, "stamp", std::to_string(delay)}, -1, stamp.wr};
    const std::int64_t t1 =
        r ? noticed_at(*r, [&](std::function<void()> cb) { r->spawn(req, std::move(cb)); })
          : waited_at(posix_spawn_child(req));
    std::int64_t t0 = 0;
    read_full(stamp.rd, &t0, sizeof t0);
    return t1 - t0;
}

// The same with a fork/_exit child that writes its stamp into shared memory.
std::int64_t fork_latency(runner* r, volatile std::int64_t* shm, int delay) {
    *shm = 0;
    pid_t pid = ::fork();
    if (pid < 0)
        fail("fork");
    if (pid == 0) {
        sleep_us(delay);
        *shm = now_ns();
        ::_exit(0);
    }
    const std::int64_t t1 =
        r ? noticed_at(*r, [&](std::function<void()> cb) { r->watch(pid, std::move(cb)); })
          : waited_at(pid);
    return t1 - *shm;
}

constexpr int warmup_samples = 5;

// The latency rows of a subject: each sample of the subject is paired with one of the floor
// (a blocking waitpid on the same kind of child, no loop involved) taken right before or
// after it in the same worker, in alternating order, emitted as "pf_<key>". The ratio of the
// two is then free of the drift between one worker and the next on a shared machine, which
// moves the floor by 10-30% from block to block. The subject's loop does not run during a
// floor sample, so no subject can take the floor's child; its SIGCHLD, if the subject
// listens, names a pid it does not watch.
template <typename F>
void paired_samples(const std::string& key, runner* r, const params& p, F sample) {
    for (int i = 0; i < warmup_samples + p.latency_samples; ++i) {
        std::int64_t v = 0, f = 0;
        if (!r) {
            v = sample(nullptr);
        } else if (i % 2 == 0) {
            v = sample(r);
            f = sample(nullptr);
        } else {
            f = sample(nullptr);
            v = sample(r);
        }
        if (i < warmup_samples)
            continue;
        emit(key, static_cast<double>(v));
        if (r)
            emit("pf_" + key, static_cast<double>(f));
    }
}

void lat_fork(runner* r, const params& p) {
    if (r && !r->can_watch_foreign_pid()) {
        note("fork/_exit children: not applicable (libuv only watches children it spawned)");
        return;
    }
    void* m = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        fail("mmap");
    auto* shm = static_cast<volatile std::int64_t*>(m);
    paired_samples("lat_fork", r, p,
                   [&](runner* who) { return fork_latency(who, shm, p.delay_us); });
    ::munmap(m, 4096);
}

void lat_exec(runner* r, const params& p, const std::string& helper) {
    fd_pair stamp;
    paired_samples("lat_exec", r, p,
                   [&](runner* who) { return exec_latency(who, stamp, helper, p.delay_us); });
}

void throughput(runner* r, const params& p, const std::string& helper) {
    const spawn_request req{{helper, "exit"}, -1, -1};
    const int total = p.throughput_children;
    const int in_flight = std::min(p.in_flight, total);
    int started = 0, done = 0;
    rusage ru0{}, ru1{};
    ::getrusage(RUSAGE_SELF, &ru0);
    std::int64_t t0 = now_ns();
    if (!r) {
        for (; started < in_flight; ++started)
            posix_spawn_child(req);
        while (done < total) {
            int st;
            if (::waitpid(-1, &st, 0) < 0) {
                if (errno == EINTR)
                    continue;
                fail("waitpid(-1)");
            }
            ++done;
            if (started < total) {
                posix_spawn_child(req);
                ++started;
            }
        }
    } else {
        std::function<void()> start = [&] {
            ++started;
            r->spawn(req, [&] {
                ++done;
                if (started < total)
                    start();
            });
        };
        while (started < in_flight)
            start();
        r->run_until([&] { return done == total; });
    }
    emit("tput", static_cast<double>(now_ns() - t0));
    // CPU time of this process alone (its children's is not in RUSAGE_SELF): the work the
    // subject did, which a busy neighbour disturbs far less than the wall clock.
    ::getrusage(RUSAGE_SELF, &ru1);
    auto ns = [](const timeval& tv) {
        return static_cast<double>(tv.tv_sec) * 1e9 + static_cast<double>(tv.tv_usec) * 1e3;
    };
    emit("tput_cpu",
         (ns(ru1.ru_utime) + ns(ru1.ru_stime) - ns(ru0.ru_utime) - ns(ru0.ru_stime)) / total);
}

// Raises a soft limit to @p need when it is lower, and the hard limit too where the process
// may (root: CAP_SYS_RESOURCE); returns the soft limit now.
rlim_t ensure_limit(int resource, const char* name, rlim_t need) {
    rlimit rl{};
    ::getrlimit(resource, &rl);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        rlim_t old = rl.rlim_cur;
        rlimit want = rl;
        want.rlim_cur = need;
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
            want.rlim_max = need;
        if (::setrlimit(resource, &want) != 0 && rl.rlim_cur < rl.rlim_max) {
            want = rl;
            want.rlim_cur = rl.rlim_max == RLIM_INFINITY ? need : std::min(rl.rlim_max, need);
            ::setrlimit(resource, &want);
        }
        ::getrlimit(resource, &rl);
        if (rl.rlim_cur != old)
            note(std::string(name) + " soft limit raised from " + std::to_string(old) + " to " +
                 std::to_string(rl.rlim_cur));
    }
    return rl.rlim_cur;
}

// Live children started for a subject that then refused to watch them: the worker reaps
// them itself at the end.
std::vector<pid_t> unwatched_;

void reap_unwatched() {
    for (pid_t pid : unwatched_)
        wait_pid(pid);
    unwatched_.clear();
}

// Bytes of memory in use: this process's resident set plus the kernel's unreclaimable slab
// (system-wide: it holds the kernel's side of a watch, a pidfd's struct file, an epoll
// item, an io_uring request; and the live children's own task structs, which the floor's
// figure has too).
double memory_in_use() {
    auto field = [](const char* path, const char* name) -> double {
        std::FILE* f = std::fopen(path, "re");
        if (!f)
            return 0;
        char line[256];
        double kib = 0;
        const std::size_t n = std::strlen(name);
        while (std::fgets(line, sizeof line, f))
            if (std::strncmp(line, name, n) == 0)
                kib = std::atof(line + n);
        std::fclose(f);
        return kib * 1024;
    };
    return field("/proc/self/status", "VmRSS:") + field("/proc/meminfo", "SUnreclaim:");
}

// Starts live children until @p holders has @p k; false (with a note) if the subject refused
// one, e.g. with EMFILE. Where the subject can watch a child it did not start, the new ones
// are started first and then watched in one go, and the memory that watching them took is
// emitted as @p mem_key (bytes per child; "" for none).
bool start_holders(runner* r, const fd_pair& gate, const std::string& helper, int k,
                   std::vector<pid_t>& holders, int& reaped, const std::string& key,
                   const std::string& mem_key = "") {
    const std::size_t first = holders.size();
    const bool batch = r && r->can_watch_foreign_pid();
    while (static_cast<int>(holders.size()) < k) {
        try {
            holders.push_back(batch ? start_holder(nullptr, gate, helper, nullptr)
                                    : start_holder(r, gate, helper, [&reaped] { ++reaped; }));
        } catch (const std::exception& e) {
            note(key + ": refused at " + std::to_string(holders.size()) +
                 " live children: " + e.what());
            return false;
        }
    }
    if (!batch)
        return true;
    const double mem0 = memory_in_use();
    for (std::size_t i = first; i < holders.size(); ++i) {
        try {
            r->watch(holders[i], [&reaped] { ++reaped; });
        } catch (const std::exception& e) {
            note(key + ": refused at " + std::to_string(i) + " watched children: " + e.what());
            // The rest are not watched: reaped here once the gate opens.
            for (std::size_t j = i; j < holders.size(); ++j)
                unwatched_.push_back(holders[j]);
            holders.resize(i);
            return false;
        }
    }
    if (!mem_key.empty() && holders.size() > first)
        emit(mem_key, (memory_in_use() - mem0) / static_cast<double>(holders.size() - first));
    return true;
}

void scale(runner* r, const params& p, const std::string& helper) {
    // The live children are added level by level (K ascending), so reaching 4096 costs 4096
    // children in all, not the sum of every K.
    std::vector<int> ks = p.live;
    std::sort(ks.begin(), ks.end());
    fd_pair gate;
    int reaped = 0;
    std::vector<pid_t> holders;
    for (int k : ks) {
        const std::string key = "scale_" + std::to_string(k);
        // A pidfd per live child, plus what the loop and zmq hold.
        ensure_limit(RLIMIT_NOFILE, "RLIMIT_NOFILE", static_cast<rlim_t>(k + 256));
        rlim_t procs = ensure_limit(RLIMIT_NPROC, "RLIMIT_NPROC", static_cast<rlim_t>(k + 512));
        if (procs != RLIM_INFINITY && procs < static_cast<rlim_t>(k + 128)) {
            note(key + ": skipped, RLIMIT_NPROC hard limit " + std::to_string(procs) + " too low");
            break;
        }
        // Memory per watch, from 1000 up (below that the noise of the rest of the machine
        // is larger than what is measured).
        if (!start_holders(r, gate, helper, k, holders, reaped, key,
                           k >= 1000 ? "mem_" + std::to_string(k) : ""))
            break;
        fd_pair stamp;
        for (int i = 0; i < warmup_samples + p.scale_samples; ++i) {
            std::int64_t v = exec_latency(r, stamp, helper, p.delay_us);
            if (i >= warmup_samples)
                emit(key, static_cast<double>(v));
        }
    }
    gate.close_write();
    if (!r) {
        for (pid_t pid : holders)
            wait_pid(pid);
    } else {
        const int n = static_cast<int>(holders.size());
        r->run_until([&] { return reaped == n; });
    }
    reap_unwatched();
}

// The crowd: p.crowd live children watched under a soft RLIMIT_NOFILE of p.crowd_nofile (what
// login shells and systemd services get), exit -> notice meanwhile, then every one released
// at once. Counts the children the subject refused to watch and the exits it reported; a
// lost exit leaves the worker waiting until the driver kills it, which is reported.
void crowd(runner* r, const params& p, const std::string& helper) {
    rlimit rl{};
    ::getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = static_cast<rlim_t>(p.crowd_nofile);
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0)
        fail("setrlimit(RLIMIT_NOFILE)");
    ensure_limit(RLIMIT_NPROC, "RLIMIT_NPROC", static_cast<rlim_t>(p.crowd + 512));
    fd_pair gate;
    int reaped = 0;
    std::vector<pid_t> holders;
    const bool all = start_holders(r, gate, helper, p.crowd, holders, reaped, "crowd");
    emit("crowd_watched", static_cast<double>(holders.size()));
    emit("crowd_refused",
         all ? 0.0 : static_cast<double>(p.crowd - static_cast<int>(holders.size())));
    try {
        fd_pair stamp;
        for (int i = 0; i < warmup_samples + p.scale_samples; ++i) {
            std::int64_t v = exec_latency(r, stamp, helper, p.delay_us);
            if (i >= warmup_samples)
                emit("crowd_lat", static_cast<double>(v));
        }
    } catch (const std::exception& e) {
        note(std::string("crowd: no latency samples: ") + e.what());
    }
    const std::int64_t t0 = now_ns();
    gate.close_write();
    if (!r) {
        for (pid_t pid : holders)
            wait_pid(pid);
        reaped = static_cast<int>(holders.size());
    } else {
        const int n = static_cast<int>(holders.size());
        r->run_until([&] { return reaped == n; });
    }
    emit("crowd_reap_time", static_cast<double>(now_ns() - t0));
    emit("crowd_lost", static_cast<double>(static_cast<int>(holders.size()) - reaped));
    reap_unwatched();
}

void idle(runner* r, const params& p, const std::string& helper) {
    if (!r) {
        note("idle: a blocking waitpid makes no wakeups at all");
        return;
    }
    fd_pair gate;
    int reaped = 0;
    start_holder(r, gate, helper, [&] { ++reaped; });
    gate.close_read();
    // Let the loop settle first (a backend may poll once at once for a new child).
    bool fired = false;
    r->add_timer(std::chrono::milliseconds(20), [&] { fired = true; });
    r->run_until([&] { return fired; });

    fired = false;
    r->add_timer(std::chrono::milliseconds(p.idle_ms), [&] { fired = true; });
    rusage before{}, after{};
    ::getrusage(RUSAGE_THREAD, &before);
    std::int64_t polls0 = r->polls();
    r->run_until([&] { return fired; });
    ::getrusage(RUSAGE_THREAD, &after);
    std::int64_t polls1 = r->polls();
    // Each time the loop thread blocks and is woken counts one voluntary context switch;
    // the timer that ends the measurement accounts for one of them.
    double secs = p.idle_ms / 1000.0;
    double wakeups = static_cast<double>(after.ru_nvcsw - before.ru_nvcsw) - 1.0;
    emit("idle_wps", std::max(0.0, wakeups) / secs);
    if (polls0 >= 0)
        emit("idle_polls", static_cast<double>(polls1 - polls0 - 1) / secs);
    gate.close_write();
    r->run_until([&] { return reaped == 1; });
}

void load(std::unique_ptr<runner>& r, const params& p, const std::string& helper) {
    void* ctx = zmq_ctx_new();
    void* rep = zmq_socket(ctx, ZMQ_REP);
    if (zmq_bind(rep, "inproc://zreap-bench-load") != 0)
        fail("zmq_bind");
    const int k = p.load_children;
    ensure_limit(RLIMIT_NOFILE, "RLIMIT_NOFILE", static_cast<rlim_t>(2 * k + 256));
    ensure_limit(RLIMIT_NPROC, "RLIMIT_NPROC", static_cast<rlim_t>(k + 512));

    fd_pair gate;
    std::atomic<int> reaped{0};
    std::atomic<bool> all_reaped{false};
    std::vector<pid_t> holders;
    for (int j = 0; j < k; ++j)
        holders.push_back(start_holder(r.get(), gate, helper, [&] {
            if (reaped.fetch_add(1) + 1 == k)
                all_reaped = true;
        }));
    gate.close_read();

    bool quit = false;
    auto serve = [&]() -> bool {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, rep, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return false;
        }
        if (zmq_msg_size(&m) == 1 && *static_cast<char*>(zmq_msg_data(&m)) == 'q')
            quit = true;
        // SIGCHLD (a handler backend or peer) can interrupt a blocking zmq call: an unsent
        // reply would wedge REP, so send again on EINTR.
        while (zmq_msg_send(&m, rep, 0) < 0 && zmq_errno() == EINTR) {
        }
        return true;
    };

    std::vector<std::int64_t> quiet, storm;
    std::int64_t storm_ns = 0;
    std::thread client([&] {
        void* req = zmq_socket(ctx, ZMQ_REQ);
        zmq_connect(req, "inproc://zreap-bench-load");
        // This thread may take a SIGCHLD too: every blocking call is made again on EINTR,
        // or REQ would be left between its send and its receive.
        auto send = [&](const char* what) {
            while (zmq_send(req, what, 1, 0) < 0 && zmq_errno() == EINTR) {
            }
        };
        auto recv = [&] {
            char b[8];
            while (zmq_recv(req, b, sizeof b, 0) < 0 && zmq_errno() == EINTR) {
            }
        };
        auto rtt = [&] {
            std::int64_t t0 = now_ns();
            send("x");
            recv();
            return now_ns() - t0;
        };
        for (int i = 0; i < p.load_warmup; ++i)
            quiet.push_back(rtt());
        std::int64_t s0 = now_ns();
        gate.close_write();  // every live child exits now
        while (!all_reaped && storm.size() < 1'000'000)
            storm.push_back(rtt());
        storm_ns = now_ns() - s0;
        send("q");
        recv();
        zmq_close(req);
    });

    if (!r) {
        // The floor: a bare zmq_poll loop serving the socket, the children reaped by a
        // thread of their own with blocking waitpid.
        std::thread reaper([&] {
            for (pid_t pid : holders)
                wait_pid(pid);
            all_reaped = true;
        });
        zmq_pollitem_t item{rep, 0, ZMQ_POLLIN, 0};
        while (!quit) {
            if (zmq_poll(&item, 1, -1) < 0 && zmq_errno() != EINTR)
                fail("zmq_poll");
            if (item.revents & ZMQ_POLLIN)
                serve();
        }
        reaper.join();
    } else {
        r->add_zmq_reader(rep, serve);
        r->run_until([&] { return quit && all_reaped; });
    }
    client.join();
    r.reset();  // the peers' io watchers go before the socket whose fd they watch
    zmq_close(rep);
    zmq_ctx_term(ctx);
    for (auto v : quiet)
        emit("load_quiet", static_cast<double>(v));
    for (auto v : storm)
        emit("load_storm", static_cast<double>(v));
    emit("load_storm_time", static_cast<double>(storm_ns));
}

}  // namespace

std::vector<int> parse_ints(const std::string& s) {
    std::vector<int> out;
    size_t pos = 0;
    while (pos < s.size()) {
        size_t end = s.find(',', pos);
        if (end == std::string::npos)
            end = s.size();
        if (end > pos)
            out.push_back(std::stoi(s.substr(pos, end - pos)));
        pos = end + 1;
    }
    return out;
}

namespace {

// The worker arguments that are one number each, by name (`live` is a list of its own).
struct int_param {
    const char* name;
    int params::*field;
};
constexpr int_param int_params[] = {
    {"latency_samples", &params::latency_samples},
    {"delay_us", &params::delay_us},
    {"throughput_children", &params::throughput_children},
    {"in_flight", &params::in_flight},
    {"scale_samples", &params::scale_samples},
    {"crowd", &params::crowd},
    {"crowd_nofile", &params::crowd_nofile},
    {"idle_ms", &params::idle_ms},
    {"load_children", &params::load_children},
    {"load_warmup", &params::load_warmup},
};

}  // namespace

std::vector<std::string> params::to_args() const {
    std::vector<std::string> args;
    for (const auto& ip : int_params)
        args.push_back(std::string(ip.name) + "=" + std::to_string(this->*ip.field));
    std::string live_s;
    for (int k : live)
        live_s += (live_s.empty() ? "" : ",") + std::to_string(k);
    args.push_back("live=" + live_s);
    return args;
}

params params::from_args(const std::vector<std::string>& args) {
    params p;
    for (const auto& a : args) {
        auto eq = a.find('=');
        if (eq == std::string::npos)
            throw std::runtime_error("bad worker argument " + a);
        const std::string k = a.substr(0, eq), v = a.substr(eq + 1);
        if (k == "live") {
            p.live = parse_ints(v);
            continue;
        }
        auto ip = std::find_if(std::begin(int_params), std::end(int_params),
                               [&](const int_param& x) { return k == x.name; });
        if (ip == std::end(int_params))
            throw std::runtime_error("unknown worker argument " + a);
        p.*(ip->field) = std::stoi(v);
    }
    return p;
}

const std::vector<std::string>& scenario_names() {
    static const std::vector<std::string> names{"lat_fork", "lat_exec", "tput",
                                                "scale",    "idle",     "load"};
    return names;
}

int run_worker(const std::string& subject, const std::string& scenario, const params& p,
               const std::string& helper) {
    if (needs_sigchld_blocked(subject)) {
        // Before any thread exists, so that every thread inherits it.
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGCHLD);
        pthread_sigmask(SIG_BLOCK, &s, nullptr);
    }
    std::unique_ptr<runner> r;
    try {
        if (subject != "floor")
            r = make_runner(subject);
    } catch (const std::exception& e) {
        note(std::string("cannot run here: ") + e.what());
        std::fflush(stdout);
        return 0;
    }
    if (scenario == "lat_fork")
        lat_fork(r.get(), p);
    else if (scenario == "lat_exec")
        lat_exec(r.get(), p, helper);
    else if (scenario == "tput")
        throughput(r.get(), p, helper);
    else if (scenario == "scale")
        scale(r.get(), p, helper);
    else if (scenario == "idle")
        idle(r.get(), p, helper);
    else if (scenario == "load")
        load(r, p, helper);
    else if (scenario == "crowd" && subject != "floor" && subject.rfind("zreap:", 0) != 0)
        note("crowd: zreap's backends only (and the floor)");
    else if (scenario == "crowd")
        crowd(r.get(), p, helper);
    else
        throw std::runtime_error("unknown scenario " + scenario);
    std::fflush(stdout);
    return 0;
}

}  // namespace bench
