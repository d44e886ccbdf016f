// The loop features every peer has, for every compiled backend: signals as loop events,
// functions posted from other threads, a stop requested from another thread or a signal
// handler, events changed in place, and the loop embedded in a host's own zmq_poll loop.

#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zmq.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "backend_fixture.hpp"
#include "helpers.hpp"

using namespace zreap_test;
using zreap::exit_status;
using zreap::spawn_options;

namespace {

class ContractFeatures : public backend_contract_test {};

int errno_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const std::system_error& e) {
        return e.code().value();
    }
    return 0;
}

std::atomic<int> app_handler_calls{0};
void app_handler(int) {
    app_handler_calls.fetch_add(1);
}

// A signal sent to the process from another thread (which does not block it, so the kernel
// may deliver it there) arrives as a callback on the loop's thread; removing the source puts
// the application's handler back.
TEST_P(ContractFeatures, SignalsArriveAsLoopEvents) {
    struct sigaction app {
    }, old{};
    app.sa_handler = app_handler;
    sigemptyset(&app.sa_mask);
    ASSERT_EQ(::sigaction(SIGUSR1, &app, &old), 0);
    {
        auto lp = make();
        const pthread_t loop_thread = pthread_self();
        int calls = 0;
        bool on_loop_thread = true;
        zreap::source_id id = lp.add_signal(SIGUSR1, [&](int signo) {
            EXPECT_EQ(signo, SIGUSR1);
            on_loop_thread = on_loop_thread && pthread_equal(pthread_self(), loop_thread);
            ++calls;
        });
        for (int round = 1; round <= 3; ++round) {
            std::thread sender([] { ::kill(::getpid(), SIGUSR1); });
            sender.join();
            ASSERT_TRUE(run_until(lp, [&] { return calls == round; })) << "round " << round;
        }
        EXPECT_TRUE(on_loop_thread);
        EXPECT_EQ(lp.stats().signals, 3u);
        EXPECT_EQ(app_handler_calls.load(), 0) << "the loop owns the signal meanwhile";
        lp.remove(id);
        ::kill(::getpid(), SIGUSR1);
        EXPECT_EQ(app_handler_calls.load(), 1) << "the application's handler is back";
        // Added again, then left to the loop's destructor to give back.
        lp.add_signal(SIGUSR1, [](int) {});
    }
    struct sigaction now {};
    ::sigaction(SIGUSR1, nullptr, &now);
    EXPECT_EQ(now.sa_handler, app_handler);
    ASSERT_EQ(::sigaction(SIGUSR1, &old, nullptr), 0);
    app_handler_calls = 0;
}

TEST_P(ContractFeatures, SignalsThatCannotBeLoopEventsAreRefused) {
    auto lp = make();
    for (int signo : {SIGCHLD, SIGKILL, SIGSTOP, SIGSEGV, SIGBUS, SIGFPE, SIGILL, 0, -3, 1000})
        EXPECT_EQ(errno_of([&] { lp.add_signal(signo, [](int) {}); }), EINVAL) << signo;
    lp.add_signal(SIGUSR2, [](int) {});
    EXPECT_EQ(errno_of([&] { lp.add_signal(SIGUSR2, [](int) {}); }), EEXIST);
    if (caps().multiple_loops) {
        auto other = make();
        EXPECT_EQ(errno_of([&] { other.add_signal(SIGUSR2, [](int) {}); }), EBUSY);
    }
    EXPECT_EQ(lp.size(), 1u);
}

// Functions posted from other threads run on the loop's thread, each once, in the order each
// thread posted them, and wake a loop that sleeps with nothing else to do.
TEST_P(ContractFeatures, PostedFunctionsRunOnTheLoopThreadInOrder) {
    auto lp = make();
    const pthread_t loop_thread = pthread_self();
    constexpr int per_thread = 500;
    std::vector<int> seen[2];
    bool on_loop_thread = true;
    std::atomic<bool> go{false};
    auto poster = [&](int t) {
        while (!go.load()) {
        }
        for (int i = 0; i < per_thread; ++i)
            lp.post([&, t, i] {
                on_loop_thread = on_loop_thread && pthread_equal(pthread_self(), loop_thread);
                seen[t].push_back(i);
                if (seen[0].size() + seen[1].size() == 2 * per_thread)
                    lp.stop();
            });
    };
    // A source that never fires keeps run() going until the last function stops it.
    int never[2];
    ASSERT_EQ(::pipe2(never, O_CLOEXEC), 0);
    lp.add_fd(never[0], ZMQ_POLLIN, [](short) { ADD_FAILURE(); });
    std::thread a(poster, 0), b(poster, 1);
    go = true;
    lp.run();
    a.join();
    b.join();
    EXPECT_TRUE(on_loop_thread);
    for (auto& v : seen) {
        ASSERT_EQ(v.size(), static_cast<std::size_t>(per_thread));
        for (int i = 0; i < per_thread; ++i)
            EXPECT_EQ(v[static_cast<std::size_t>(i)], i);
    }
    EXPECT_EQ(lp.stats().posted, 2u * per_thread);
    ::close(never[0]);
    ::close(never[1]);
}

TEST_P(ContractFeatures, APostedFunctionThatThrowsLosesNoOther) {
    auto lp = make();
    std::vector<int> ran;
    lp.post([&] { ran.push_back(1); });
    lp.post([&] {
        ran.push_back(2);
        throw std::runtime_error("boom");
    });
    lp.post([&] { ran.push_back(3); });
    EXPECT_THROW(lp.run_once(1000ms), std::runtime_error);
    EXPECT_EQ(lp.run_once(1000ms), 1);
    EXPECT_EQ(ran, (std::vector<int>{1, 2, 3}));
    EXPECT_EQ(errno_of([&] { lp.post(nullptr); }), EINVAL);
}

zreap::loop* stop_target = nullptr;
void stop_from_handler(int) {
    stop_target->request_stop();
}

// request_stop() ends run() from another thread, and from a signal handler; the loop sleeps
// in its poll meanwhile (nothing else would wake it).
TEST_P(ContractFeatures, RequestStopFromAnotherThreadOrASignalHandler) {
    auto lp = make();
    int never[2];
    ASSERT_EQ(::pipe2(never, O_CLOEXEC), 0);
    lp.add_fd(never[0], ZMQ_POLLIN, [](short) { ADD_FAILURE(); });

    std::thread stopper([&] { lp.request_stop(); });
    lp.run();  // returns: a request made before or during run() stops it
    stopper.join();

    stop_target = &lp;
    struct sigaction sa {
    }, old{};
    sa.sa_handler = stop_from_handler;
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(::sigaction(SIGUSR2, &sa, &old), 0);
    std::thread sender([] { ::kill(::getpid(), SIGUSR2); });
    lp.run();
    sender.join();
    ASSERT_EQ(::sigaction(SIGUSR2, &old, nullptr), 0);
    stop_target = nullptr;
    EXPECT_EQ(lp.stats().idle_wakeups, 0u);
    ::close(never[0]);
    ::close(never[1]);
}

// modify() changes what an fd waits for in place: ZMQ_POLLOUT on, off, on again.
TEST_P(ContractFeatures, ModifyChangesEventsInPlace) {
    auto lp = make();
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    int writable = 0;
    zreap::source_id id = lp.add_fd(p[1], 0, [&](short revents) {
        EXPECT_TRUE(revents & ZMQ_POLLOUT);
        ++writable;
        lp.modify(id, 0);  // stop asking
    });
    EXPECT_EQ(lp.run_once(50ms), 0) << "no events asked for, none reported";
    lp.modify(id, ZMQ_POLLOUT);
    EXPECT_EQ(lp.run_once(1000ms), 1);
    EXPECT_EQ(lp.run_once(50ms), 0);
    lp.modify(id, ZMQ_POLLOUT);
    EXPECT_EQ(lp.run_once(1000ms), 1);
    EXPECT_EQ(writable, 2);
    EXPECT_EQ(errno_of([&] { lp.modify(987654, ZMQ_POLLIN); }), ENOENT);
    zreap::source_id t = lp.add_timer(1h, 0ms, [] {});
    EXPECT_EQ(errno_of([&] { lp.modify(t, ZMQ_POLLIN); }), EINVAL);
    ::close(p[0]);
    ::close(p[1]);
}

// The loop embedded in a host's own zmq_poll loop: the host owns a REP socket, zreap watches
// the children; both are served, and a host waiting on nothing does not spin.
TEST_P(ContractFeatures, EmbeddedInAHostZmqPollLoop) {
    auto lp = make();
    void* ctx = zmq_ctx_new();
    void* rep = zmq_socket(ctx, ZMQ_REP);
    void* req = zmq_socket(ctx, ZMQ_REQ);
    ASSERT_EQ(zmq_bind(rep, "inproc://embed"), 0);
    ASSERT_EQ(zmq_connect(req, "inproc://embed"), 0);

    std::vector<exit_status> exits;
    gated_group kids;
    for (int i = 0; i < 3; ++i)
        lp.watch_child(kids.add(20 + i), [&](const exit_status& s) { exits.push_back(s); });
    ASSERT_EQ(zmq_send(req, "ping", 4, 0), 4);
    int answered = 0;
    auto host_round = [&](int host_timeout) {
        std::vector<zmq_pollitem_t> items{{rep, 0, ZMQ_POLLIN, 0}};
        const std::size_t mine = items.size();
        int t = lp.prepare(items);
        int wait = t < 0 ? host_timeout : std::min(t, host_timeout);
        zmq_poll(items.data(), static_cast<int>(items.size()), wait);
        if (items[0].revents & ZMQ_POLLIN) {
            char buf[8];
            if (zmq_recv(rep, buf, sizeof buf, ZMQ_DONTWAIT) == 4) {
                zmq_send(rep, "pong", 4, 0);
                ++answered;
            }
        }
        lp.dispatch(items.data() + mine, items.size() - mine);
    };
    const auto end = clock_type::now() + 20s;
    while (answered == 0 && clock_type::now() < end)
        host_round(1000);
    EXPECT_EQ(answered, 1);
    kids.open();
    while (exits.size() < 3 && clock_type::now() < end)
        host_round(1000);
    ASSERT_EQ(exits.size(), 3u);
    for (const exit_status& s : exits)
        EXPECT_EQ(s.exit_code(), kids.codes[s.pid]);
    EXPECT_THROW(lp.dispatch(nullptr, 0), std::logic_error) << "dispatch without prepare";

    // Idle: with nothing to do, the loop lets the host sleep as long as it likes (the
    // sigaction backend: no longer than its wakeup cap, and only while it watches children).
    // (The signal backends look once more, without blocking, after reaping by hints.)
    int t = 0;
    for (int i = 0; i < 5 && t == 0; ++i) {
        std::vector<zmq_pollitem_t> items;
        t = lp.prepare(items);
        EXPECT_EQ(lp.dispatch(items.data(), items.size()), 0);
    }
    EXPECT_EQ(t, -1) << "an idle loop asks for no timeout";
    char buf[8];
    EXPECT_EQ(zmq_recv(req, buf, sizeof buf, 0), 4);
    zmq_close(req);
    zmq_close(rep);
    zmq_ctx_term(ctx);
}

// The exit report carries the child's resource usage where the backend can get it
// (capabilities::reports_usage): a child that burns 60 ms of CPU in user mode and touches
// 48 MiB reports at least that.
TEST_P(ContractFeatures, ExitReportCarriesResourceUsage) {
    auto lp = make();
    pid_t pid = fork_child([] {
        const std::size_t size = 48u << 20;
        volatile char* p = static_cast<volatile char*>(std::malloc(size));
        if (!p)
            return 3;
        for (std::size_t i = 0; i < size; i += 4096)
            p[i] = 1;
        struct rusage ru {};
        volatile unsigned long spin = 0;
        do {
            for (int i = 0; i < 100000; ++i)
                spin = spin + 1;
            ::getrusage(RUSAGE_SELF, &ru);
        } while (ru.ru_utime.tv_sec == 0 && ru.ru_utime.tv_usec < 60000);
        return 0;
    });
    exit_status s = watch_until_reported(lp, pid);
    ASSERT_EQ(s.pid, pid);
    EXPECT_EQ(s.exit_code(), 0);
    EXPECT_EQ(s.has_usage, caps().reports_usage);
    if (s.has_usage) {
        EXPECT_GE(s.usage.user_cpu, 60ms);
        EXPECT_LT(s.usage.user_cpu, 60s);
        EXPECT_GE(s.usage.max_rss_kib, 48 * 1024);
        std::printf("[ %-9s] usage: user %.1f ms, system %.1f ms, max RSS %ld KiB\n",
                    std::string(zreap::to_string(GetParam())).c_str(),
                    s.usage.user_cpu.count() / 1e3, s.usage.system_cpu.count() / 1e3,
                    s.usage.max_rss_kib);
    }
}

// Under a low soft RLIMIT_NOFILE, a loop whose backend needs an fd per child (pidfd) raises
// the soft limit to the hard one instead of refusing children with EMFILE, and a spawned
// child gets the limit the process had; with raise_fd_limit = false, EMFILE names the limit.
TEST_P(ContractFeatures, FdLimitIsRaisedInsteadOfRefusingChildren) {
    struct rlimit rl {};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < 1024)
        GTEST_SKIP() << "SKIPPED: the hard RLIMIT_NOFILE is only " << rl.rlim_max;
    const zreap::backend b = GetParam();
    for (bool raise : {true, false}) {
        SCOPED_TRACE(raise ? "raise_fd_limit" : "no raise");
        std::string failure = in_forked_child([b, raise]() -> std::string {
            struct rlimit low {};
            CHILD_CHECK(::getrlimit(RLIMIT_NOFILE, &low) == 0);
            const rlim_t hard = low.rlim_max;
            low.rlim_cur = 64;
            CHILD_CHECK(::setrlimit(RLIMIT_NOFILE, &low) == 0);
            zreap::loop_options opts;
            opts.which = b;
            opts.raise_fd_limit = raise;
            zreap::loop lp(opts);
            gated_group kids;
            int reported = 0;
            int watched = 0;
            std::string refusal;
            for (int i = 0; i < 150; ++i) {
                pid_t pid = kids.add(i % 100);
                try {
                    lp.watch_child(pid, [&](const exit_status&) { ++reported; });
                    ++watched;
                } catch (const std::system_error& e) {
                    refusal = e.what();
                    CHILD_CHECK(e.code().value() == EMFILE);
                    ::kill(pid, SIGKILL);
                    ::waitpid(pid, nullptr, 0);
                    break;
                }
            }
            struct rlimit now {};
            CHILD_CHECK(::getrlimit(RLIMIT_NOFILE, &now) == 0);
            const bool needs_fds = b == zreap::backend::pidfd;
            if (raise || !needs_fds) {
                CHILD_CHECK(watched == 150);
                CHILD_CHECK(now.rlim_cur == (needs_fds ? hard : 64));
            } else {
                CHILD_CHECK(watched < 150);
                CHILD_CHECK(refusal.find("RLIMIT_NOFILE") != std::string::npos);
                CHILD_CHECK(now.rlim_cur == 64);
            }
            if (!raise && needs_fds) {
                // The table is full, and stays so: spawn says EMFILE too.
                spawn_options o;
                o.argv = {ZREAP_SPAWN_HELPER, "exit", "0"};
                try {
                    (void)zreap::spawn(lp, o, [](const exit_status&) {});
                    return "spawn worked with a full fd table";
                } catch (const std::system_error& e) {
                    CHILD_CHECK(e.code().value() == EMFILE);
                }
                kids.open();
                CHILD_CHECK(run_until(
                    lp, [&] { return reported == watched; }, 20s));
                return "";
            }
            // A spawned child gets the limit the process started with.
            std::string out;
            spawn_options o;
            o.argv = {ZREAP_SPAWN_HELPER, "nofile"};
            o.stdout_mode = zreap::stdio::pipe;
            bool exited = false;
            zreap::child c = zreap::spawn(lp, o, [&](const exit_status&) { exited = true; });
            const int fd = c.stdout_fd();
            lp.add_fd(fd, ZMQ_POLLIN, [&](short) {
                char buf[64];
                ssize_t n = ::read(fd, buf, sizeof buf);
                if (n > 0)
                    out.append(buf, static_cast<std::size_t>(n));
            });
            CHILD_CHECK(run_until(
                lp, [&] { return exited; }, 20s));
            CHILD_CHECK(out == "64\n");
            kids.open();
            CHILD_CHECK(run_until(
                lp, [&] { return reported == watched; }, 20s));
            return "";
        });
        EXPECT_EQ(failure, "");
    }
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Backends, ContractFeatures,
                         ::testing::ValuesIn(zreap::compiled_backends()), backend_param_name);
