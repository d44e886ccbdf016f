// The loop itself: sockets, fds, timers, removal during dispatch, EINTR, exceptions.
// These do not depend on the backend; they run on the default one.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <zmq.h>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include "helpers.hpp"

using namespace zreap_test;
using zreap::exit_status;

namespace {

struct zmq_fixture : ::testing::Test {
    void* ctx = zmq_ctx_new();
    ~zmq_fixture() override { zmq_ctx_term(ctx); }
};

using LoopSockets = zmq_fixture;

TEST_F(LoopSockets, ReqRepRoundTrip) {
    zreap::loop lp;
    void* rep = zmq_socket(ctx, ZMQ_REP);
    void* req = zmq_socket(ctx, ZMQ_REQ);
    ASSERT_EQ(zmq_bind(rep, "inproc://rt"), 0);
    ASSERT_EQ(zmq_connect(req, "inproc://rt"), 0);
    int answered = 0;
    std::string reply;
    lp.add_socket(rep, ZMQ_POLLIN, [&](short revents) {
        EXPECT_TRUE(revents & ZMQ_POLLIN);
        char buf[64];
        int n = zmq_recv(rep, buf, sizeof buf, ZMQ_DONTWAIT);
        ASSERT_GT(n, 0);
        std::string msg(buf, static_cast<size_t>(n));
        std::string out = "re:" + msg;
        zmq_send(rep, out.data(), out.size(), 0);
        ++answered;
    });
    lp.add_socket(req, ZMQ_POLLIN, [&](short) {
        char buf[64];
        int n = zmq_recv(req, buf, sizeof buf, ZMQ_DONTWAIT);
        ASSERT_GT(n, 0);
        reply.assign(buf, static_cast<size_t>(n));
    });
    for (int i = 0; i < 10; ++i) {
        reply.clear();
        std::string msg = "hello" + std::to_string(i);
        ASSERT_EQ(zmq_send(req, msg.data(), msg.size(), 0), static_cast<int>(msg.size()));
        ASSERT_TRUE(run_until(
            lp, [&] { return !reply.empty(); }, 5s));
        EXPECT_EQ(reply, "re:" + msg);
    }
    EXPECT_EQ(answered, 10);
    zmq_close(req);
    zmq_close(rep);
}

TEST_F(LoopSockets, SocketAndChildInOneLoop) {
    zreap::loop lp;
    void* pull = zmq_socket(ctx, ZMQ_PULL);
    void* push = zmq_socket(ctx, ZMQ_PUSH);
    ASSERT_EQ(zmq_bind(pull, "inproc://mix"), 0);
    ASSERT_EQ(zmq_connect(push, "inproc://mix"), 0);
    int messages = 0;
    bool exited = false;
    lp.add_socket(pull, ZMQ_POLLIN, [&](short) {
        char b[8];
        while (zmq_recv(pull, b, sizeof b, ZMQ_DONTWAIT) >= 0)
            ++messages;
    });
    gated_child child(4);
    lp.watch_child(child.pid(), [&](const exit_status& s) {
        EXPECT_EQ(s.exit_code(), 4);
        exited = true;
    });
    zmq_send(push, "x", 1, 0);
    ASSERT_TRUE(run_until(lp, [&] { return messages == 1; }));
    child.open();
    ASSERT_TRUE(run_until(lp, [&] { return exited; }));
    zmq_send(push, "y", 1, 0);
    ASSERT_TRUE(run_until(lp, [&] { return messages == 2; }));
    zmq_close(push);
    zmq_close(pull);
}

TEST(LoopFds, PipeReadableAndHangup) {
    zreap::loop lp;
    int fds[2];
    ASSERT_EQ(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    std::string got;
    bool hup = false;
    zreap::source_id id = lp.add_fd(fds[0], ZMQ_POLLIN, [&](short revents) {
        char buf[16];
        ssize_t n = read(fds[0], buf, sizeof buf);
        if (n > 0)
            got.append(buf, static_cast<size_t>(n));
        if (n == 0 || (revents & ZMQ_POLLERR)) {
            hup = true;
            lp.remove(id);
        }
    });
    ASSERT_EQ(write(fds[1], "abc", 3), 3);
    ASSERT_TRUE(run_until(lp, [&] { return got == "abc"; }));
    close(fds[1]);
    ASSERT_TRUE(run_until(lp, [&] { return hup; }));
    EXPECT_FALSE(lp.contains(id));
    close(fds[0]);
}

// Without a zmq socket in the set the loop calls poll() itself instead of zmq_poll; an fd
// source must see the same revents either way: ZMQ_POLLIN for data, ZMQ_POLLERR (with or
// without ZMQ_POLLIN, as zmq_poll reports POLLHUP) once the writer is gone.
TEST_F(LoopSockets, FdReventsAreTheSameWithAndWithoutASocket) {
    auto observe = [&](bool with_socket) {
        zreap::loop lp;
        void* pull = nullptr;
        if (with_socket) {
            pull = zmq_socket(ctx, ZMQ_PULL);
            EXPECT_EQ(zmq_bind(pull, "inproc://revents"), 0);
            lp.add_socket(pull, ZMQ_POLLIN, [](short) {});
        }
        int fds[2];
        EXPECT_EQ(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
        std::vector<short> seen;
        zreap::source_id id = lp.add_fd(fds[0], ZMQ_POLLIN, [&](short revents) {
            seen.push_back(revents);
            char buf[16];
            if (read(fds[0], buf, sizeof buf) <= 0)
                lp.remove(id);
        });
        EXPECT_EQ(write(fds[1], "abc", 3), 3);
        EXPECT_TRUE(run_until(lp, [&] { return seen.size() == 1; }));
        close(fds[1]);
        EXPECT_TRUE(run_until(lp, [&] { return !lp.contains(id); }));
        close(fds[0]);
        if (pull)
            zmq_close(pull);
        return seen;
    };
    std::vector<short> bare = observe(false);
    std::vector<short> mixed = observe(true);
    ASSERT_EQ(bare.size(), 2u);
    EXPECT_EQ(bare[0], ZMQ_POLLIN);
    EXPECT_TRUE(bare[1] & ZMQ_POLLERR) << bare[1];
    EXPECT_EQ(bare, mixed);
}

TEST(LoopFds, RejectsBadArguments) {
    zreap::loop lp;
    EXPECT_THROW(lp.add_fd(-1, ZMQ_POLLIN, [](short) {}), std::system_error);
    EXPECT_THROW(lp.add_fd(0, ZMQ_POLLIN, nullptr), std::system_error);
    EXPECT_THROW(lp.add_socket(nullptr, ZMQ_POLLIN, [](short) {}), std::system_error);
    EXPECT_THROW(lp.add_timer(-1ms, 0ms, [] {}), std::system_error);
}

TEST(LoopTimers, OneShotAndPeriodic) {
    zreap::loop lp;
    int once = 0, periodic = 0;
    auto start = clock_type::now();
    clock_type::time_point once_at{};
    lp.add_timer(50ms, 0ms, [&] {
        ++once;
        once_at = clock_type::now();
    });
    zreap::source_id tick = lp.add_timer(10ms, 10ms, [&] { ++periodic; });
    ASSERT_TRUE(run_until(
        lp, [&] { return once == 1 && periodic >= 5; }, 10s));
    EXPECT_GE(once_at - start, 50ms) << "one-shot timer fired early";
    lp.remove(tick);
    int after = periodic;
    lp.run_once(50ms);
    EXPECT_EQ(periodic, after) << "removed timer still fired";
    EXPECT_EQ(once, 1);
    EXPECT_EQ(lp.size(), 0u);
}

TEST(LoopTimers, RunReturnsWhenNoSourcesLeft) {
    zreap::loop lp;
    int fired = 0;
    lp.add_timer(1ms, 0ms, [&] { ++fired; });
    lp.add_timer(5ms, 0ms, [&] { ++fired; });
    lp.run();
    EXPECT_EQ(fired, 2);
}

TEST(LoopDispatch, RemovedSourceIsNotCalledLaterInSameDispatch) {
    zreap::loop lp;
    int a[2], b[2];
    ASSERT_EQ(pipe2(a, O_CLOEXEC), 0);
    ASSERT_EQ(pipe2(b, O_CLOEXEC), 0);
    ASSERT_EQ(write(a[1], "x", 1), 1);
    ASSERT_EQ(write(b[1], "x", 1), 1);
    int calls = 0;
    zreap::source_id ida = 0, idb = 0;
    ida = lp.add_fd(a[0], ZMQ_POLLIN, [&](short) {
        ++calls;
        lp.remove(ida);
        lp.remove(idb);
    });
    idb = lp.add_fd(b[0], ZMQ_POLLIN, [&](short) {
        ++calls;
        lp.remove(ida);
        lp.remove(idb);
    });
    EXPECT_EQ(lp.run_once(1s), 1);
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(lp.size(), 0u);
    for (int fd : {a[0], a[1], b[0], b[1]})
        close(fd);
}

TEST(LoopDispatch, CallbackRemovesEverythingAndStops) {
    zreap::loop lp;
    std::vector<zreap::source_id> ids;
    gated_child child;
    ids.push_back(lp.watch_child(child.pid(), [](const exit_status&) {}));
    ids.push_back(lp.add_timer(1h, 0ms, [] {}));
    ids.push_back(lp.add_timer(1ms, 0ms, [&] {
        for (auto id : ids)
            lp.remove(id);
        lp.stop();
    }));
    lp.run();
    EXPECT_EQ(lp.size(), 0u);
    // Removed before it exited, so it is ours to reap; left behind, it was still running
    // when the SIGCHLD hub tests that follow check that no child is left.
    child.open();
    EXPECT_EQ(::waitpid(child.pid(), nullptr, 0), child.pid());
}

TEST(LoopExceptions, ThrowLeavesRunAndLoopStaysUsable) {
    zreap::loop lp;
    std::vector<pid_t> pids;
    int reported = 0;
    bool thrown = false;
    for (int i = 0; i < 3; ++i) {
        pid_t pid = exit_now(i);
        wait_until_zombie(pid);
        lp.watch_child(pid, [&](const exit_status&) {
            ++reported;
            if (!thrown) {
                thrown = true;
                throw std::runtime_error("boom");
            }
        });
    }
    int caught = 0;
    auto end = clock_type::now() + 10s;
    while (reported < 3 && clock_type::now() < end) {
        try {
            lp.run_once(100ms);
        } catch (const std::runtime_error& e) {
            EXPECT_STREQ(e.what(), "boom");
            ++caught;
        }
    }
    EXPECT_EQ(caught, 1);
    EXPECT_EQ(reported, 3) << "an exit reaped in the same batch as the throw was lost";
    // Still usable afterwards.
    bool fired = false;
    lp.add_timer(1ms, 0ms, [&] { fired = true; });
    ASSERT_TRUE(run_until(lp, [&] { return fired; }));
}

TEST(LoopExceptions, ThrowFromRunPropagates) {
    zreap::loop lp;
    lp.add_timer(1ms, 0ms, [] { throw std::logic_error("from timer"); });
    EXPECT_THROW(lp.run(), std::logic_error);
    EXPECT_EQ(lp.size(), 0u);
}

// EINTR from zmq_poll is "go round again", never an error or the end of run_once's wait.
TEST(LoopSignals, EintrStormDoesNotEndTheWait) {
    struct sigaction sa {
    }, old{};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: every signal interrupts poll
    ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
    zreap::loop lp;
    bool fired = false;
    auto start = clock_type::now();  // before the timer is armed: it is due 300 ms after that
    lp.add_timer(300ms, 0ms, [&] { fired = true; });
    std::atomic<bool> stop{false};
    pthread_t target = pthread_self();
    std::thread storm([&] {
        while (!stop) {
            pthread_kill(target, SIGUSR1);
            std::this_thread::sleep_for(1ms);
        }
    });
    int n = 0;
    EXPECT_NO_THROW(n = lp.run_once(5s));
    auto took = clock_type::now() - start;
    stop = true;
    storm.join();
    sigaction(SIGUSR1, &old, nullptr);
    EXPECT_EQ(n, 1);
    EXPECT_TRUE(fired);
    EXPECT_GE(took, 300ms);
    EXPECT_GT(lp.stats().interrupted, 10u);
}

TEST(LoopSignals, RunOnceTimesOut) {
    zreap::loop lp;
    gated_child child;
    lp.watch_child(child.pid(), [](const exit_status&) {});
    auto start = clock_type::now();
    EXPECT_EQ(lp.run_once(100ms), 0);
    EXPECT_GE(clock_type::now() - start, 100ms);
}

TEST(ExitStatus, DecodesAndPrints) {
    auto e = exit_status::from_wait_status(10, 3 << 8);
    EXPECT_TRUE(e.exited());
    EXPECT_EQ(e.exit_code(), 3);
    EXPECT_EQ(to_string(e), "pid 10 exited with code 3");
    siginfo_t si{};
    si.si_pid = 11;
    si.si_code = CLD_DUMPED;
    si.si_status = SIGSEGV;
    auto d = exit_status::from_siginfo(si);
    EXPECT_TRUE(d.signaled());
    EXPECT_TRUE(d.core_dumped());
    EXPECT_EQ(d.term_signal(), SIGSEGV);
    EXPECT_EQ(to_string(d), "pid 11 killed by signal 11 (SIGSEGV), core dumped");
    auto u = exit_status::from_wait_status(12, exit_status::unknown_raw);
    EXPECT_TRUE(u.unknown());
    EXPECT_FALSE(u.exited());
    EXPECT_FALSE(u.signaled());
}

}  // namespace
