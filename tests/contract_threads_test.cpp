// The contract cases about threads (docs/reliability.md, "signalfd: no exit lost to a
// thread that does not block SIGCHLD", and docs/backends.md): an
// application thread that does not block SIGCHLD, and an exit storm while another thread
// talks to the loop. Run for every compiled backend, like contract_test.cpp; a backend
// that needs SIGCHLD blocked everywhere must refuse clearly where it cannot work, and the
// tests assert that capability instead of skipping.

#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "backend_fixture.hpp"
#include "helpers.hpp"

using namespace zreap_test;
using zreap::backend;
using zreap::exit_status;

namespace {

class ContractThreads : public backend_contract_test {};

// A thread of the application that leaves SIGCHLD unblocked and forks children on request,
// so that the kernel aims those children's SIGCHLD at it first (it is their parent).
class unblocked_thread {
  public:
    unblocked_thread() {
        thread_ = std::thread([this] { body(); });
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [&] { return tid_ != 0; });
    }
    ~unblocked_thread() {
        {
            std::lock_guard<std::mutex> lock(m_);
            quit_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }
    pid_t tid() const { return tid_; }

    /// Has the thread fork @p n children gated on @p gate_rd, exiting with @p code(i).
    std::vector<pid_t> fork_gated(int n, int gate_rd, int first_code) {
        std::unique_lock<std::mutex> lock(m_);
        request_ = n;
        gate_ = gate_rd;
        first_code_ = first_code;
        cv_.notify_all();
        cv_.wait(lock, [&] { return request_ == 0; });
        return std::move(forked_);
    }

  private:
    void body() {
        sigset_t chld;
        sigemptyset(&chld);
        sigaddset(&chld, SIGCHLD);
        pthread_sigmask(SIG_UNBLOCK, &chld, nullptr);
        std::unique_lock<std::mutex> lock(m_);
        tid_ = ::gettid();
        cv_.notify_all();
        for (;;) {
            cv_.wait(lock, [&] { return quit_ || request_ > 0; });
            if (quit_)
                return;
            for (int i = 0; i < request_; ++i) {
                int rd = gate_, code = (first_code_ + i) % 256;
                forked_.push_back(gate_reader(rd, code));
            }
            request_ = 0;
            cv_.notify_all();
        }
    }

    std::mutex m_;
    std::condition_variable cv_;
    std::thread thread_;
    pid_t tid_ = 0;
    bool quit_ = false;
    int request_ = 0, gate_ = -1, first_code_ = 0;
    std::vector<pid_t> forked_;
};

// The gate_child program with its stdin on @p gate_rd: it exits with @p code when the gate's
// write end is closed. posix_spawn, not fork: cheap even from a large (sanitized) process.
pid_t spawn_gated(int gate_rd, int code) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, gate_rd, 0);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    std::string code_arg = std::to_string(code);
    char* argv[] = {const_cast<char*>(ZREAP_GATE_CHILD), code_arg.data(), nullptr};
    pid_t pid = -1;
    int rc = posix_spawn(&pid, ZREAP_GATE_CHILD, &actions, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0)
        throw std::system_error(rc, std::generic_category(), "posix_spawn gate_child");
    return pid;
}

// 10. A thread made before the loop that does not block SIGCHLD: either every exit is
// reported, promptly, or (for a backend that needs SIGCHLD blocked everywhere) the loop
// refuses to start, naming the thread. Never a silent loss. Half the children are forked
// by that thread, so their SIGCHLD goes to it first.
TEST_P(ContractThreads, UnblockedThreadBeforeLoop) {
    unblocked_thread helper;
    std::optional<zreap::loop> lp;
    std::string error;
    try {
        lp.emplace(GetParam());
    } catch (const std::system_error& e) {
        error = e.what();
    }
    if (caps().needs_sigchld_blocked) {
        ASSERT_FALSE(error.empty()) << "a loop was made although a thread leaves SIGCHLD "
                                       "unblocked: its exits could be lost";
        EXPECT_NE(error.find(std::to_string(helper.tid())), std::string::npos) << error;
        EXPECT_NE(error.find("SIGCHLD"), std::string::npos) << error;
        return;
    }
    ASSERT_TRUE(error.empty()) << error;

    constexpr int n = 200;
    int gate[2];
    ASSERT_EQ(pipe2(gate, O_CLOEXEC), 0);
    std::vector<pid_t> pids = helper.fork_gated(n / 2, gate[0], 0);
    for (int i = n / 2; i < n; ++i)
        pids.push_back(gate_reader(gate[0], i % 256));
    close(gate[0]);
    std::map<pid_t, int> expected, got, calls;
    for (int i = 0; i < n; ++i) {
        expected[pids[static_cast<std::size_t>(i)]] = i % 256;
        lp->watch_child(pids[static_cast<std::size_t>(i)], [&](const exit_status& s) {
            ++calls[s.pid];
            got[s.pid] = s.exit_code();
        });
    }
    lp->run_once(0ms);
    auto opened = clock_type::now();
    close(gate[1]);  // every child sees EOF at once
    ASSERT_TRUE(run_until(*lp, [&] { return got.size() == expected.size(); }))
        << got.size() << " of " << n << " reported";
    auto took = clock_type::now() - opened;
    for (int i = 0; i < 5; ++i)
        lp->run_once(0ms);
    EXPECT_EQ(got, expected);
    for (auto [pid, c] : calls)
        EXPECT_EQ(c, 1) << "pid " << pid << " reported " << c << " times";
    // Late would mean a wakeup was lost and found by a timeout; 2 s is far above the 200
    // exits' real cost (and above sigaction's 50 ms cap).
    EXPECT_LT(took, 2s);
}

// 10, the other way round: a thread made after the loop (so the thread check at
// construction could not see it) unblocks SIGCHLD and forks a child. Watching it must
// either be refused, naming the thread, or its exit must be reported; a backend that
// needs SIGCHLD blocked everywhere would otherwise lose it without a word.
TEST_P(ContractThreads, UnblockedThreadAfterLoop) {
    zreap::loop lp(GetParam());
    unblocked_thread helper;
    int gate[2];
    ASSERT_EQ(pipe2(gate, O_CLOEXEC), 0);
    std::vector<pid_t> pids = helper.fork_gated(1, gate[0], 33);
    close(gate[0]);
    ASSERT_EQ(pids.size(), 1u);
    exit_status seen;
    std::string error;
    try {
        lp.watch_child(pids[0], [&](const exit_status& s) { seen = s; });
    } catch (const std::system_error& e) {
        error = e.what();
    }
    lp.run_once(0ms);  // looks at the newly watched child while it still runs
    close(gate[1]);
    if (!error.empty()) {
        EXPECT_TRUE(caps().needs_sigchld_blocked) << "refused without a reason: " << error;
        EXPECT_NE(error.find(std::to_string(helper.tid())), std::string::npos) << error;
        wait_until_zombie(pids[0]);
        int status = 0;
        EXPECT_EQ(waitpid(pids[0], &status, 0), pids[0]) << "a refused child was reaped";
        return;
    }
    ASSERT_TRUE(run_until(
        lp, [&] { return seen.pid != 0; }, 5s))
        << "the exit of a child forked by a thread with SIGCHLD unblocked was lost";
    EXPECT_EQ(seen.exit_code(), 33);
}

// How many times the tests below repeat their race: @p plain in a plain build, a quarter
// of it under a sanitizer, where each fork and thread costs milliseconds (the race is the
// same; the sanitizers look for memory and threading errors, which fewer rounds still
// exercise); ZREAP_TEST_RACE_REPEATS=N gives N per 1000 of @p plain.
int race_repeats(int plain) {
    if (const char* v = std::getenv("ZREAP_TEST_RACE_REPEATS"))
        return std::max(1, plain * std::atoi(v) / 1000);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    return plain / 4;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
    return plain / 4;
#else
    return plain;
#endif
#else
    return plain;
#endif
}

// A child that exits with @p code at once: the gate_child program, given a closed gate.
// posix_spawn, cheap even from a large (sanitized) process, unlike fork.
pid_t spawn_exiting(int code) {
    int gate[2];
    if (::pipe2(gate, O_CLOEXEC) != 0)
        throw std::runtime_error("pipe2 failed");
    ::close(gate[1]);
    pid_t pid = spawn_gated(gate[0], code);
    ::close(gate[0]);
    return pid;
}

// A thread that leaves SIGCHLD unblocked and blocks on a pipe until it is destroyed. Made
// right before a loop, it may still be being created when the loop checks the threads:
// glibc blocks every signal in a new thread until its start routine runs, so that the
// check can read an all-blocked mask, and a moment later the thread leaves SIGCHLD
// unblocked.
class newborn_thread {
  public:
    newborn_thread() {
        if (::pipe2(park_, O_CLOEXEC) != 0)
            throw std::runtime_error("pipe2 failed");
        thread_ = std::thread([rd = park_[0]] {
            sigset_t chld;
            sigemptyset(&chld);
            sigaddset(&chld, SIGCHLD);
            pthread_sigmask(SIG_UNBLOCK, &chld, nullptr);
            await_gate(rd);  // SA_RESTART (a SIGCHLD handler's) restarts the read
        });
    }
    ~newborn_thread() {
        ::close(park_[1]);
        thread_.join();
        ::close(park_[0]);
    }
    newborn_thread(const newborn_thread&) = delete;
    newborn_thread& operator=(const newborn_thread&) = delete;

  private:
    int park_[2] = {-1, -1};
    std::thread thread_;
};

// A refusal of the kind the contract allows: only from a backend that needs SIGCHLD
// blocked everywhere, and saying why.
void expect_clear_refusal(backend b, const std::system_error& e) {
    EXPECT_TRUE(zreap::backend_capabilities(b).needs_sigchld_blocked)
        << "refused without a reason: " << e.what();
    EXPECT_NE(std::string(e.what()).find("leaves SIGCHLD unblocked"), std::string::npos)
        << e.what();
}

// A thread started right before the loop, leaving SIGCHLD unblocked, while the loop is
// made, a child forked and watched: each time either a clear refusal (from the loop's
// constructor or from watch_child) or the exit reported with its code. Never a loop made
// and then deaf: signalfd's thread check could read the new thread's all-blocked mask,
// pass, and the child's SIGCHLD then went to that thread and was discarded (before the
// fix: 21 and 102 of 200 tries lost their exit, in two runs).
TEST_P(ContractThreads, ThreadStartingBesideTheLoopLosesNoExit) {
    const int tries = race_repeats(1000);
    int refused_by_loop = 0, refused_by_watch = 0, reported = 0;
    std::uint64_t rescued = 0;
    for (int i = 0; i < tries; ++i) {
        newborn_thread helper;
        std::optional<zreap::loop> lp;
        try {
            lp.emplace(GetParam());
        } catch (const std::system_error& e) {
            expect_clear_refusal(GetParam(), e);
            ++refused_by_loop;
            continue;
        }
        const int code = i % 256;
        pid_t pid = exit_now(code);
        auto seen = std::make_shared<exit_status>();
        try {
            lp->watch_child(pid, [seen](const exit_status& s) { *seen = s; });
        } catch (const std::system_error& e) {
            expect_clear_refusal(GetParam(), e);
            ++refused_by_watch;
            EXPECT_EQ(::waitpid(pid, nullptr, 0), pid) << "a refused child was reaped";
            continue;
        }
        run_until(
            *lp, [&] { return seen->pid != 0; }, 10s);
        ASSERT_EQ(seen->pid, pid) << "try " << i << ": the exit of a watched child was lost ("
                                  << reported << " reported before it)";
        ASSERT_EQ(seen->exit_code(), code);
        ++reported;
        rescued += lp->stats().rescued_signals;
    }
    std::printf(
        "[ newborn  ] %s: %d tries: %d refused by the loop, %d by watch_child, %d "
        "reported (%llu SIGCHLDs rescued by the handler)\n",
        std::string(zreap::to_string(GetParam())).c_str(), tries, refused_by_loop, refused_by_watch,
        reported, static_cast<unsigned long long>(rescued));
    if (!caps().needs_sigchld_blocked) {
        EXPECT_EQ(reported, tries);
        EXPECT_EQ(rescued, 0u) << "only signalfd rescues signals";
    }
}

// The original article's program with a client thread born beside the loop: a REP socket
// answered by the loop while a client thread (started right before the loop, SIGCHLD
// unblocked) keeps asking over REQ, and a child respawned from each exit callback, for
// many generations. Every generation's exit is reported, or the backend refuses clearly
// (the loop, or a watch_child in the respawn callback); none is lost. Before the fix, the
// signalfd loop lost the first generation of the first round.
TEST_P(ContractThreads, ArticlePatternWithClientThreadBornBesideTheLoop) {
    const int rounds = race_repeats(100);
    constexpr int generations = 10;
    void* ctx = zmq_ctx_new();
    ASSERT_NE(ctx, nullptr);
    int refused_by_loop = 0, refused_by_watch = 0, completed = 0;
    long answered = 0, reported = 0;
    std::uint64_t rescued = 0;
    for (int round = 0; round < rounds; ++round) {
        const std::string endpoint = "inproc://zreap-article-" + std::to_string(round);
        void* rep = zmq_socket(ctx, ZMQ_REP);
        ASSERT_NE(rep, nullptr);
        ASSERT_EQ(zmq_bind(rep, endpoint.c_str()), 0);
        std::atomic<bool> quit{false};
        std::atomic<long> answers{0};
        // The first generation is started before the client thread, so that it is watched
        // right after the loop is made, while that thread may still be being created.
        const pid_t first = spawn_exiting(0);
        std::thread client([&] {
            sigset_t chld;
            sigemptyset(&chld);
            sigaddset(&chld, SIGCHLD);
            pthread_sigmask(SIG_UNBLOCK, &chld, nullptr);
            void* req = zmq_socket(ctx, ZMQ_REQ);
            int linger = 0;
            zmq_setsockopt(req, ZMQ_LINGER, &linger, sizeof linger);
            zmq_connect(req, endpoint.c_str());
            // A SIGCHLD handler may run on this thread (the rescue, or a handler backend's):
            // zmq calls then fail with EINTR and are made again.
            while (!quit) {
                if (zmq_send(req, "ping", 4, ZMQ_DONTWAIT) < 0) {
                    std::this_thread::yield();
                    continue;
                }
                zmq_pollitem_t item{req, 0, ZMQ_POLLIN, 0};
                while (!quit) {
                    if (zmq_poll(&item, 1, 5) == 1) {
                        char buf[8];
                        while (zmq_recv(req, buf, sizeof buf, 0) < 0 && zmq_errno() == EINTR) {
                        }
                        ++answers;
                        break;
                    }
                }
            }
            zmq_close(req);
        });
        std::optional<zreap::loop> lp;
        bool refused = false;
        try {
            lp.emplace(GetParam());
        } catch (const std::system_error& e) {
            expect_clear_refusal(GetParam(), e);
            refused = true;
            ++refused_by_loop;
            ::waitpid(first, nullptr, 0);
        }
        int generation = 0;
        if (lp) {
            lp->add_socket(rep, ZMQ_POLLIN, [&](short) {
                char buf[8];
                while (zmq_recv(rep, buf, sizeof buf, ZMQ_DONTWAIT) >= 0) {
                    while (zmq_send(rep, "pong", 4, 0) < 0 && zmq_errno() == EINTR) {
                    }
                }
            });
            std::function<void(const exit_status&)> on_exit;
            auto watch = [&](pid_t pid) {
                try {
                    lp->watch_child(pid, on_exit);
                } catch (...) {
                    ::waitpid(pid, nullptr, 0);  // refused: not watched, so ours to reap
                    throw;
                }
            };
            on_exit = [&](const exit_status& s) {
                EXPECT_EQ(s.exit_code(), generation % 256);
                if (++generation < generations)
                    watch(spawn_exiting(generation % 256));
            };
            try {
                watch(first);
                run_until(
                    *lp, [&] { return generation == generations; }, 10s);
            } catch (const std::system_error& e) {
                expect_clear_refusal(GetParam(), e);
                refused = true;
                ++refused_by_watch;
            }
        }
        quit = true;
        client.join();
        reported += generation;
        rescued += lp ? lp->stats().rescued_signals : 0;
        lp.reset();
        zmq_close(rep);
        answered += answers;
        if (refused)
            continue;
        ASSERT_EQ(generation, generations)
            << "round " << round << ": generation " << generation << "'s exit was lost";
        ++completed;
    }
    zmq_ctx_term(ctx);
    std::printf(
        "[ article  ] %s: %d rounds of %d generations: %d complete, %d refused by the "
        "loop, %d by watch_child; %ld exits reported (%llu SIGCHLDs rescued), %ld requests "
        "answered\n",
        std::string(zreap::to_string(GetParam())).c_str(), rounds, generations, completed,
        refused_by_loop, refused_by_watch, reported, static_cast<unsigned long long>(rescued),
        answered);
    if (!caps().needs_sigchld_blocked) {
        EXPECT_EQ(completed, rounds);
    }
}

// A thread that blocks SIGCHLD (made after the loop, it inherits the loop thread's mask),
// is checked by a watch_child, and only then unblocks SIGCHLD: no check sees that. Every
// child's SIGCHLD then goes to that thread (the loop thread of a signalfd loop blocks it).
// The exits are still reported, through the signalfd backend's SIGCHLD handler, which
// counts them in loop_stats::rescued_signals. Before the fix, the first exit was lost.
TEST_P(ContractThreads, ThreadUnblockingSigchldAfterTheCheckLosesNoExit) {
    zreap::loop lp(GetParam());
    mask_thread helper;
    // This watch_child checks the helper, which still has the loop thread's mask.
    exit_status first = watch_until_reported(lp, exit_now(1));
    EXPECT_EQ(first.exit_code(), 1);
    helper.unblock_sigchld();
    constexpr int n = 20;
    for (int i = 0; i < n; ++i) {
        exit_status s = watch_until_reported(lp, exit_now(10 + i), 10s);
        ASSERT_NE(s.pid, 0) << "exit " << i << " lost after a checked thread unblocked SIGCHLD";
        EXPECT_EQ(s.exit_code(), 10 + i);
    }
    const std::uint64_t rescued = lp.stats().rescued_signals;
    std::printf("[ unblock  ] %s: %d exits reported, %llu SIGCHLDs rescued by the handler\n",
                std::string(zreap::to_string(GetParam())).c_str(), n,
                static_cast<unsigned long long>(rescued));
    if (caps().needs_sigchld_blocked) {
        EXPECT_GT(rescued, 0u) << "the exits came in, but not through the rescue";
    } else {
        EXPECT_EQ(rescued, 0u) << "only signalfd rescues signals";
    }
}

// An exit storm while another thread keeps a REQ/REP conversation with the loop: 1000
// children (the small gate_child program) exit at once (in batches of up to 1000, fewer if
// RLIMIT_NPROC is tight), every exit is reported exactly once, and the loop keeps answering
// requests meanwhile, because it reaps at most max_exits_per_iteration exits between two polls of
// its sockets.
TEST_P(ContractThreads, ExitStormWhileServingRequests) {
    constexpr int total = 1000;
    // The bound on one request's round trip: 2.5 s. Generous on purpose: when 1000 children
    // wake and exit at once on a small machine the scheduler itself stalls both threads for
    // a while (measured 30-590 ms on a shared, loaded 2-core machine, for every backend,
    // pidfd included, with or without sanitizers, and 1.09 s once with eight builds running
    // beside the test). What the bound catches is a loop that
    // drains the whole storm, or sleeps until a timeout, before it reads its socket again.
    constexpr auto request_bound = 2500ms;

    int batch = total;
    struct rlimit nproc {};
    if (getrlimit(RLIMIT_NPROC, &nproc) == 0 && nproc.rlim_cur != RLIM_INFINITY)
        batch =
            static_cast<int>(std::clamp<rlim_t>(nproc.rlim_cur / 4, 1, static_cast<rlim_t>(total)));

    zreap::loop lp(GetParam());
    void* ctx = zmq_ctx_new();
    ASSERT_NE(ctx, nullptr);
    void* rep = zmq_socket(ctx, ZMQ_REP);
    ASSERT_NE(rep, nullptr);
    ASSERT_EQ(zmq_bind(rep, "inproc://zreap-storm"), 0);
    std::atomic<long> served{0};
    lp.add_socket(rep, ZMQ_POLLIN, [&](short) {
        char buf[16];
        while (zmq_recv(rep, buf, sizeof buf, ZMQ_DONTWAIT) >= 0) {
            // With a SIGCHLD handler backend the signal can interrupt a blocking zmq call
            // on the loop thread; an unsent reply would leave REP stuck (seen once).
            while (zmq_send(rep, "pong", 4, 0) < 0 && zmq_errno() == EINTR) {
            }
            ++served;
        }
    });

    // The client. It pauses while the main thread forks (the loop does not run then, and
    // that wait is the test's, not the loop's).
    std::atomic<bool> quit{false}, paused{true}, idle{true}, failed{false};
    std::atomic<int> client_errno{0};
    std::atomic<long> answered{0};
    std::atomic<long long> max_rtt_us{0};
    std::thread client([&] {
        void* req = zmq_socket(ctx, ZMQ_REQ);
        int linger = 0, timeout = 10'000;
        zmq_setsockopt(req, ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(req, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
        zmq_connect(req, "inproc://zreap-storm");
        while (!quit) {
            if (paused) {
                idle = true;
                std::this_thread::sleep_for(1ms);  // pacing only: nothing waits on this
                continue;
            }
            idle = false;
            auto sent = clock_type::now();
            char buf[16];
            // A SIGCHLD handler backend's signal may land on this thread: blocking zmq
            // calls then fail with EINTR and are simply made again.
            int rc;
            while ((rc = zmq_send(req, "ping", 4, 0)) < 0 && zmq_errno() == EINTR) {
            }
            if (rc == 4) {
                while ((rc = zmq_recv(req, buf, sizeof buf, 0)) < 0 && zmq_errno() == EINTR) {
                }
            }
            if (rc != 4) {
                client_errno = zmq_errno();
                failed = true;
                break;
            }
            long long us =
                std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - sent)
                    .count();
            long long prev = max_rtt_us.load();
            while (us > prev && !max_rtt_us.compare_exchange_weak(prev, us)) {
            }
            ++answered;
        }
        idle = true;
        zmq_close(req);
    });
    auto pause_client = [&] {
        paused = true;
        // A request in flight needs the loop to answer it before the client goes idle.
        ASSERT_TRUE(run_until(lp, [&] { return idle.load() || failed.load(); }));
    };

    std::map<pid_t, int> expected, got, calls;
    long during_storm = 0;
    auto storm_time = clock_type::duration::zero();
    for (int started = 0; started < total; started += batch) {
        int n = std::min(batch, total - started);
        pause_client();
        int gate[2];
        ASSERT_EQ(pipe2(gate, O_CLOEXEC), 0);
        for (int i = 0; i < n; ++i) {
            int code = (started + i) % 256;
            pid_t pid = spawn_gated(gate[0], code);
            expected[pid] = code;
            lp.watch_child(pid, [&](const exit_status& s) {
                ++calls[s.pid];
                got[s.pid] = s.exit_code();
            });
        }
        close(gate[0]);
        paused = false;
        // Let the conversation get going before the storm starts.
        long before = answered;
        ASSERT_TRUE(run_until(lp, [&] { return answered >= before + 10 || failed.load(); }));
        ASSERT_FALSE(failed.load());
        long at_open = answered;
        auto opened = clock_type::now();
        close(gate[1]);  // the whole batch exits at once
        std::size_t want = expected.size();
        ASSERT_TRUE(run_until(lp, [&] { return got.size() == want || failed.load(); }))
            << got.size() << " of " << want << " reported";
        storm_time += clock_type::now() - opened;
        during_storm += answered - at_open;
    }
    pause_client();
    quit = true;
    client.join();
    for (int i = 0; i < 5; ++i)
        lp.run_once(0ms);

    EXPECT_FALSE(failed.load()) << "a request failed: " << zmq_strerror(client_errno.load())
                                << " (EAGAIN: no answer within 10 s)";
    EXPECT_EQ(got, expected);
    for (auto [pid, c] : calls)
        EXPECT_EQ(c, 1) << "pid " << pid << " reported " << c << " times";
    std::printf(
        "[ storm    ] %s: %d exits in batches of %d, reaped in %lld ms; %ld requests "
        "answered meanwhile, %ld in all; longest round trip %lld us\n",
        std::string(zreap::to_string(GetParam())).c_str(), total, batch,
        static_cast<long long>(
            std::chrono::duration_cast<std::chrono::milliseconds>(storm_time).count()),
        during_storm, served.load(), max_rtt_us.load());
    EXPECT_LT(max_rtt_us.load(),
              std::chrono::duration_cast<std::chrono::microseconds>(request_bound).count())
        << "a request waited longer than the bound during the exit storm";

    zmq_close(rep);
    zmq_ctx_term(ctx);
}

// Loops of two different backends alive at once in one process (a library using one,
// the application another): each hears its own children's exits, or the second loop is
// refused with a clear error (EBUSY). Never a loop that is made and then deaf: a signalfd
// loop blocks SIGCHLD, which silences a handler backend's handler, and two signalfds steal
// each other's signals.
TEST_P(ContractThreads, CoexistsWithOtherBackends) {
    for (backend other : zreap::compiled_backends()) {
        if (other == GetParam())
            continue;
        for (bool mine_first : {true, false}) {
            SCOPED_TRACE(std::string(zreap::to_string(GetParam())) + " with " +
                         std::string(zreap::to_string(other)) +
                         (mine_first ? ", made first" : ", made second"));
            std::optional<zreap::loop> first, second;
            first.emplace(mine_first ? GetParam() : other);
            std::string error;
            int code = 0;
            try {
                second.emplace(mine_first ? other : GetParam());
            } catch (const std::system_error& e) {
                error = e.what();
                code = e.code().value();
            }
            if (!error.empty()) {
                EXPECT_EQ(code, EBUSY) << error;
                EXPECT_NE(error.find("SIGCHLD"), std::string::npos) << error;
                continue;
            }
            gated_child a(11), b(12);
            exit_status seen_a, seen_b;
            first->watch_child(a.pid(), [&](const exit_status& s) { seen_a = s; });
            second->watch_child(b.pid(), [&](const exit_status& s) { seen_b = s; });
            first->run_once(0ms);
            second->run_once(0ms);
            a.open();
            b.open();
            auto end = clock_type::now() + 10s;
            while ((seen_a.pid == 0 || seen_b.pid == 0) && clock_type::now() < end) {
                first->run_once(10ms);
                second->run_once(10ms);
            }
            EXPECT_EQ(seen_a.exit_code(), 11) << "the first loop missed its child's exit";
            EXPECT_EQ(seen_b.exit_code(), 12) << "the second loop missed its child's exit";
        }
    }
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Backends, ContractThreads, ::testing::ValuesIn(zreap::compiled_backends()),
                         backend_param_name);
