// core/sigchld_hub's hint ring (sigchld_hints): the pids the shared SIGCHLD handler hands to
// a flag subscriber (the sigaction backend), so that it reaps those children first instead
// of peeking over every child of the process. What the backend relies on: each stored pid
// comes out once, a full ring drops pids (counted) but the flag is still set, and handlers
// on several threads at once never lose or duplicate a stored pid.

#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <set>
#include <system_error>
#include <thread>
#include <vector>

#include "core/sigchld_hub.hpp"
#include "helpers.hpp"

using namespace zreap_test;
using zreap::detail::sigchld_hints;

namespace {

constexpr std::size_t capacity = sigchld_hints::capacity;

std::vector<pid_t> take_all(sigchld_hints& h) {
    std::vector<pid_t> out(capacity);
    out.resize(h.take(out.data(), out.size()));
    return out;
}

TEST(SigchldHints, EachPidOnceAndDropsCountedWhenFull) {
    sigchld_hints h;
    EXPECT_TRUE(take_all(h).empty());
    for (std::size_t i = 0; i < capacity; ++i)
        ASSERT_TRUE(h.put(static_cast<pid_t>(1000 + i)));
    EXPECT_FALSE(h.put(5000));
    EXPECT_FALSE(h.put(5001));
    EXPECT_EQ(h.dropped(), 2u);

    // A smaller buffer leaves the rest for the next call.
    pid_t some[10];
    ASSERT_EQ(h.take(some, 10), 10u);
    std::vector<pid_t> got(some, some + 10);
    auto rest = take_all(h);
    EXPECT_EQ(rest.size(), capacity - 10);
    got.insert(got.end(), rest.begin(), rest.end());
    std::sort(got.begin(), got.end());
    for (std::size_t i = 0; i < capacity; ++i)
        EXPECT_EQ(got[i], static_cast<pid_t>(1000 + i));
    EXPECT_TRUE(take_all(h).empty());

    // Emptied entries are used again.
    EXPECT_TRUE(h.put(7));
    EXPECT_EQ(take_all(h), std::vector<pid_t>{7});
    EXPECT_EQ(h.dropped(), 2u);
}

// Two producers (as two handlers on two threads) and a taker, all at once: every pid that
// put() accepted comes out exactly once, and every other one was counted as dropped.
TEST(SigchldHints, TwoThreadsPutWhileOneTakes) {
    sigchld_hints h;
    constexpr int per_thread = 50000;
    std::atomic<int> producing{2};
    std::vector<char> accepted[2];
    auto produce = [&](int t) {
        accepted[t].assign(per_thread, 0);
        for (int i = 0; i < per_thread; ++i) {
            accepted[t][i] = h.put(1 + t * per_thread + i);
            if (i % 64 == 0)
                sched_yield();  // let the others in, on a machine with few cores
        }
        producing.fetch_sub(1);
    };
    std::vector<pid_t> taken;
    std::thread a(produce, 0), b(produce, 1);
    for (;;) {
        const bool last = producing.load() == 0;  // read before the take that follows
        auto got = take_all(h);
        taken.insert(taken.end(), got.begin(), got.end());
        if (last && got.empty())
            break;
        if (got.empty())
            sched_yield();
    }
    a.join();
    b.join();

    std::vector<pid_t> expected;
    for (int t = 0; t < 2; ++t)
        for (int i = 0; i < per_thread; ++i)
            if (accepted[t][i])
                expected.push_back(1 + t * per_thread + i);
    std::sort(taken.begin(), taken.end());
    EXPECT_EQ(std::adjacent_find(taken.begin(), taken.end()), taken.end()) << "a pid came twice";
    EXPECT_EQ(taken, expected);
    EXPECT_EQ(h.dropped(), 2u * per_thread - expected.size());
}

/// Subscribes a flag and a ring to the hub for the test's life.
struct flag_subscriber {
    std::atomic<int> flag{0};
    sigchld_hints hints;
    int slot;
    explicit flag_subscriber(pthread_t thread)
        : slot(zreap::detail::sigchld_subscribe_flag(&flag, &hints, thread, "hub test")) {}
    ~flag_subscriber() { zreap::detail::sigchld_unsubscribe(slot); }

    /// Waits (bounded) until the handler has set the flag, and takes it.
    bool wait_flag(std::chrono::seconds bound = 10s) {
        auto end = clock_type::now() + bound;
        while (flag.exchange(0) == 0) {
            if (clock_type::now() > end)
                return false;
            sched_yield();
        }
        return true;
    }
};

bool has_children() {
    siginfo_t si{};
    return ::waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == 0;
}

void reap(pid_t pid) {
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
}

struct SigchldHub : ::testing::Test {
    void SetUp() override {
        reap_leftovers();
        // No child but the test's own, so every SIGCHLD is about one of them.
        ASSERT_FALSE(has_children()) << "a child of an earlier test is still running";
        sigaction(SIGCHLD, nullptr, &before_);
    }
    void TearDown() override {
        struct sigaction now {};
        sigaction(SIGCHLD, nullptr, &now);
        EXPECT_EQ(now.sa_handler, before_.sa_handler) << "the hub's handler stayed installed";
    }
    struct sigaction before_ {};
};

// One exit at a time: the handler stores the child's pid before it sets the flag; once the
// ring is full it drops the pids, counts them, and still sets the flag.
TEST_F(SigchldHub, HandlerStoresEachChildsPidThenSetsTheFlag) {
    flag_subscriber sub(pthread_self());
    for (int i = 0; i < 3; ++i) {
        pid_t pid = exit_now(0);
        ASSERT_TRUE(sub.wait_flag()) << "no SIGCHLD handled for child " << i;
        EXPECT_EQ(take_all(sub.hints), std::vector<pid_t>{pid});
        reap(pid);
    }
    // Not taken, so it fills up.
    constexpr std::size_t extra = 5;
    std::set<pid_t> children;
    for (std::size_t i = 0; i < capacity + extra; ++i) {
        pid_t pid = exit_now(0);
        children.insert(pid);
        // Each exit on its own: no two SIGCHLDs coalesce, so each handler run names one.
        ASSERT_TRUE(sub.wait_flag())
            << "no flag for child " << i << " (full ring: " << (i >= capacity) << ")";
        reap(pid);
    }
    EXPECT_EQ(sub.hints.dropped(), extra);
    auto got = take_all(sub.hints);
    EXPECT_EQ(got.size(), capacity);
    for (pid_t p : got)
        EXPECT_EQ(children.count(p), 1u) << p << " is not one of the children";
    EXPECT_EQ(std::set<pid_t>(got.begin(), got.end()).size(), got.size()) << "a pid came twice";
}

// Children forked and exiting on two threads at once, while the subscriber's thread takes
// hints: handlers run on whichever thread the kernel picks, several at once. Each pid comes
// out at most once (coalesced signals name only one of their exits, so not every pid
// comes), is one of the children, and the flag is up when the last exit is done.
TEST_F(SigchldHub, ChildrenExitingOnTwoThreadsEachPidAtMostOnce) {
    flag_subscriber sub(pthread_self());
    constexpr int per_thread = 150;
    std::vector<pid_t> kids[2];
    std::atomic<int> forking{2};
    auto fork_some = [&](int t) {
        for (int i = 0; i < per_thread; ++i)
            kids[t].push_back(exit_now(i % 256));
        for (pid_t p : kids[t])
            wait_until_zombie(p);
        forking.fetch_sub(1);
    };
    std::vector<pid_t> taken;
    std::thread a(fork_some, 0), b(fork_some, 1);
    while (forking.load() != 0) {
        auto got = take_all(sub.hints);
        taken.insert(taken.end(), got.begin(), got.end());
        sched_yield();
    }
    a.join();
    b.join();
    // Every child is a zombie, so every SIGCHLD for them has been sent, and at least one
    // has been handled by now or soon: the flag is up (it is never taken here).
    ASSERT_TRUE(sub.wait_flag());
    auto got = take_all(sub.hints);
    taken.insert(taken.end(), got.begin(), got.end());

    std::set<pid_t> all(kids[0].begin(), kids[0].end());
    all.insert(kids[1].begin(), kids[1].end());
    ASSERT_EQ(all.size(), 2u * per_thread);
    std::map<pid_t, int> times;
    for (pid_t p : taken)
        ++times[p];
    for (auto [p, n] : times) {
        EXPECT_EQ(all.count(p), 1u) << p << " is not one of the children";
        EXPECT_EQ(n, 1) << p << " came " << n << " times";
    }
    EXPECT_LE(taken.size() + sub.hints.dropped(), all.size());
    EXPECT_GT(taken.size(), 0u);
    for (pid_t p : all)
        reap(p);
}

// The signalfd reservation keeps every handler subscriber out (its loop blocks SIGCHLD, so
// their handler would never run), except the reservation holder's own rescue pipe: the
// handler then writes the pid of a child whose SIGCHLD reached a thread that does not block
// it (here the test's thread) to that pipe.
TEST_F(SigchldHub, SignalfdReservationAdmitsOnlyItsRescuePipe) {
    using namespace zreap::detail;
    auto code_of = [](auto&& f) {
        try {
            f();
        } catch (const std::system_error& e) {
            return e.code().value();
        }
        return 0;
    };
    sigchld_pipe early("hub test");
    EXPECT_EQ(code_of([&] { early.subscribe_signalfd_rescue(); }), EBUSY)
        << "a rescue pipe without a reservation";
    sigchld_reserve_for_signalfd("hub test");
    struct release {
        ~release() { sigchld_release_signalfd(); }
    } released_at_end;
    sigchld_pipe other("hub test");
    EXPECT_EQ(code_of([&] { other.subscribe(); }), EBUSY);
    std::atomic<int> flag{0};
    EXPECT_EQ(code_of([&] { sigchld_subscribe_flag(&flag, nullptr, pthread_self(), "hub test"); }),
              EBUSY);
    {
        sigchld_pipe rescue("hub test");
        rescue.subscribe_signalfd_rescue();
        sigchld_pipe second("hub test");
        EXPECT_EQ(code_of([&] { second.subscribe_signalfd_rescue(); }), EBUSY);

        pid_t pid = exit_now(0);
        std::vector<pid_t> got;
        const auto end = clock_type::now() + 10s;
        while (got.empty() && clock_type::now() < end) {
            rescue.take([&](pid_t p) { got.push_back(p); });
            sched_yield();
        }
        EXPECT_EQ(got, std::vector<pid_t>{pid});
        reap(pid);
    }
    // The rescue pipe gone, the handler is gone too (TearDown checks the disposition).
}

}  // namespace
