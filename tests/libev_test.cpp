// What the libev backend promises beyond the contract suite: one loop per process with a
// clear refusal, a fresh libev loop after the previous one is gone, no lost wakeup when
// another thread takes SIGCHLD, and the per-iteration budget honoured although libev
// reaps every exited child in one go.

#include <ev.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <map>
#include <thread>

#include "backend_fixture.hpp"
#include "helpers.hpp"

using namespace zreap_test;
using zreap::backend;
using zreap::exit_status;

namespace {

// Each test leaves SIGCHLD's disposition, and whether it is blocked, as it found them.
class Libev : public ::testing::Test {
  protected:
    void TearDown() override {
        reap_leftovers();
        sigset_t now;
        pthread_sigmask(SIG_SETMASK, nullptr, &now);
        EXPECT_EQ(sigismember(&now, SIGCHLD), sigismember(&before_.mask, SIGCHLD));
        before_.expect_chld_handler_unchanged();
    }
    signal_state before_;
};

TEST_F(Libev, SecondLoopIsRefusedWithEbusy) {
    zreap::loop first(backend::libev);
    try {
        zreap::loop second(backend::libev);
        FAIL() << "a second libev loop was made";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), EBUSY);
        EXPECT_NE(std::string(e.what()).find("libev"), std::string::npos) << e.what();
    }
    // The refusal left the first loop working.
    bool done = false;
    first.watch_child(exit_now(4), [&](const exit_status& s) { done = s.exit_code() == 4; });
    EXPECT_TRUE(run_until(first, [&] { return done; }));
}

TEST_F(Libev, ANewLoopWorksAfterThePreviousOneIsGone) {
    for (int round = 0; round < 3; ++round) {
        zreap::loop lp(backend::libev);
        exit_status seen = watch_until_reported(lp, exit_now(round + 1));
        ASSERT_NE(seen.pid, 0) << "round " << round;
        EXPECT_EQ(seen.exit_code(), round + 1);
    }
}

TEST_F(Libev, RefusesWhenOtherCodeOwnsLibevsDefaultLoop) {
    struct ev_loop* theirs = ev_default_loop(EVFLAG_NOENV);
    ASSERT_NE(theirs, nullptr);
    std::string error;
    try {
        zreap::loop lp(backend::libev);
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), EBUSY);
        error = e.what();
    }
    ev_loop_destroy(theirs);
    sigaction(SIGCHLD, &before_.chld, nullptr);  // libev leaves SIG_DFL behind
    EXPECT_NE(error.find("default loop"), std::string::npos) << error;
}

// The child exited, and its SIGCHLD was gone, before the loop existed.
TEST_F(Libev, ChildThatExitedBeforeTheLoopExistedIsReported) {
    pid_t pid = exit_now(8);
    wait_until_zombie(pid);
    zreap::loop lp(backend::libev);
    auto start = clock_type::now();
    exit_status seen = watch_until_reported(lp, pid);
    ASSERT_NE(seen.pid, 0);
    EXPECT_EQ(seen.exit_code(), 8);
    EXPECT_LT(clock_type::now() - start, 2s);
}

// The loop thread blocks SIGCHLD and a helper thread does not, so the handler always runs
// on the helper, never inside zmq_poll or libev: the wakeup must still come at once. This
// is where driving libev from its own pipe signal mode loses every exit.
TEST_F(Libev, NoLostWakeupWhenAnotherThreadTakesSigchld) {
    int stop[2];
    ASSERT_EQ(pipe2(stop, O_CLOEXEC), 0);
    std::thread helper([rd = stop[0]] {
        pollfd p{rd, POLLIN, 0};
        while (poll(&p, 1, -1) < 0 && errno == EINTR) {
        }
    });
    sigset_t chld, old;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &chld, &old);
    {
        zreap::loop lp(backend::libev);
        for (int i = 0; i < 30; ++i) {
            gated_child child(i);
            exit_status seen;
            lp.watch_child(child.pid(), [&](const exit_status& s) { seen = s; });
            lp.run_once(0ms);
            auto opened = clock_type::now();
            child.open();
            // Blocking calls with a bound far beyond any scheduling delay: one that returns
            // with nothing done waited its whole 5 s, i.e. the exit did not wake it.
            int timeouts = 0;
            while (seen.pid == 0 && clock_type::now() - opened < 10s)
                if (lp.run_once(5000ms) == 0)
                    ++timeouts;
            auto latency = clock_type::now() - opened;
            ASSERT_EQ(seen.pid, child.pid()) << "trial " << i;
            EXPECT_EQ(seen.exit_code(), i);
            EXPECT_EQ(timeouts, 0) << "trial " << i << ": wakeup lost";
            EXPECT_LT(latency, 2s) << "trial " << i << ": exit noticed late";
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    close(stop[1]);
    helper.join();
    close(stop[0]);
}

// libev reaps every exited child in one run; the loop must still get them in batches of
// at most max_exits_per_iteration, each exactly once.
TEST_F(Libev, HonoursThePerIterationBudget) {
    zreap::loop_options o;
    o.which = backend::libev;
    o.max_exits_per_iteration = 3;
    zreap::loop lp(o);
    std::map<pid_t, int> calls;
    std::vector<pid_t> pids;
    for (int i = 0; i < 10; ++i)
        pids.push_back(exit_now(i));
    for (pid_t p : pids)
        wait_until_zombie(p);
    for (pid_t p : pids)
        lp.watch_child(p, [&](const exit_status& s) { ++calls[s.pid]; });
    int iterations = 0;
    while (calls.size() < pids.size() && iterations < 100) {
        int n = lp.run_once(100ms);
        EXPECT_LE(n, 3);
        ++iterations;
    }
    ASSERT_EQ(calls.size(), pids.size());
    EXPECT_GE(iterations, 4);
    for (auto [pid, n] : calls)
        EXPECT_EQ(n, 1) << pid;
}

// libev reaps every child of the process, so a libev loop and any other zreap loop never
// live together: the second one is refused with EBUSY, whichever comes first, and the
// refusal leaves the first loop working (libev's own SIGCHLD handler, installed and removed
// while the refused loop was being made, must not have taken zreap's away).
TEST_F(Libev, RefusedBesideAnyOtherLoopAndLeavesItWorking) {
    for (backend b : zreap::compiled_backends()) {
        if (b == backend::libev || !zreap::backend_usable(b))
            continue;
        SCOPED_TRACE(std::string(zreap::to_string(b)));
        {
            zreap::loop other(b);
            try {
                zreap::loop lp(backend::libev);
                ADD_FAILURE() << "a libev loop was made beside another zreap loop";
            } catch (const std::system_error& e) {
                EXPECT_EQ(e.code().value(), EBUSY) << e.what();
            }
            gated_child child(7);
            exit_status seen;
            other.watch_child(child.pid(), [&](const exit_status& s) { seen = s; });
            other.run_once(0ms);
            child.open();
            EXPECT_TRUE(run_until(
                other, [&] { return seen.pid != 0; }, 5s));
            EXPECT_EQ(seen.exit_code(), 7);
        }
        {
            zreap::loop lp(backend::libev);
            EXPECT_THROW(zreap::loop other(b), std::system_error);
        }
    }
}

}  // namespace
