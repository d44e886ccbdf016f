// What the io_uring backend promises beyond the contract suite: its requests outlive the
// thread that submitted them, a forked child never touches the parent's ring, and
// completions that overflow the completion queue are not lost.

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <optional>
#include <string>
#include <thread>

#include "helpers.hpp"

using namespace zreap_test;
using zreap::backend;
using zreap::exit_status;

namespace {

class IoUring : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!zreap::backend_usable(backend::io_uring))
            GTEST_SKIP() << "io_uring is compiled in but not usable here (kernel < 6.7, "
                            "kernel.io_uring_disabled, or a seccomp filter)";
    }
    void TearDown() override { reap_leftovers(); }
};

// An io_uring request belongs to the thread that submitted it, and the kernel cancels it when
// that thread exits. A loop made and first run in a setup thread, then run by another
// thread, would lose every exit it had been asked about (the loop's rule is one thread for
// a loop's whole life, but this is an easy rule to break): the backend submits them again.
TEST_F(IoUring, RequestsOfAnExitedThreadAreSubmittedAgain) {
    std::optional<zreap::loop> lp;
    gated_group kids;
    std::map<pid_t, int> seen;
    std::thread setup([&] {
        lp.emplace(backend::io_uring);
        for (int i = 0; i < 5; ++i)
            lp->watch_child(kids.add(30 + i),
                            [&](const exit_status& s) { seen[s.pid] = s.exit_code(); });
        lp->run_once(std::chrono::milliseconds(0));  // submits the WAITIDs from this thread
    });
    setup.join();
    kids.open();
    ASSERT_TRUE(run_until(
        *lp, [&] { return seen.size() == 5; }, 10s))
        << seen.size() << " of 5 exits reported after the submitting thread exited";
    for (auto [pid, code] : kids.codes)
        EXPECT_EQ(seen[pid], code);
}

// A child forked without exec has a copy of the loop object and the ring's shared mappings.
// Using the loop there is refused, and destroying the copy (as a child that returns from the
// scope that made it does) neither cancels the parent's requests nor takes its completions:
// every exit still reaches the parent's loop, once.
TEST_F(IoUring, ForkedChildLeavesTheParentsRingAlone) {
    zreap::loop lp(backend::io_uring);
    gated_group kids;
    std::map<pid_t, int> seen;
    for (int i = 0; i < 6; ++i)
        lp.watch_child(kids.add(40 + i), [&](const exit_status& s) { ++seen[s.pid]; });
    lp.run_once(0ms);  // submitted
    int result[2];
    ASSERT_EQ(::pipe2(result, O_CLOEXEC), 0);
    pid_t worker = ::fork();
    ASSERT_GE(worker, 0);
    if (worker == 0) {
        char verdict = 'R';
        try {
            lp.watch_child(exit_now(1), [](const exit_status&) {});
            verdict = 'A';  // accepted: wrong
        } catch (const std::system_error& e) {
            if (e.code().value() != EPERM ||
                std::string(e.what()).find("forked") == std::string::npos)
                verdict = 'M';
        }
        // The copy of the loop is destroyed here, as it would be on leaving its scope.
        lp.~loop();
        ssize_t w = ::write(result[1], &verdict, 1);
        (void)w;
        ::_exit(0);
    }
    ::close(result[1]);
    char verdict = 0;
    ASSERT_EQ(::read(result[0], &verdict, 1), 1);
    ::close(result[0]);
    EXPECT_EQ(verdict, 'R') << "A: the child could watch on the parent's loop; M: wrong error";
    int status = 0;
    ASSERT_EQ(::waitpid(worker, &status, 0), worker);
    kids.open();
    ASSERT_TRUE(run_until(
        lp, [&] { return seen.size() == 6; }, 10s))
        << seen.size() << " of 6 exits reported after the forked child dropped its copy";
    lp.run_once(0ms);
    for (auto [pid, calls] : seen)
        EXPECT_EQ(calls, 1) << pid;
}

// More exits waiting than the completion queue holds (1024 entries): the kernel keeps the
// rest in its overflow list, and every one is reported, once, with its status.
TEST_F(IoUring, CompletionQueueOverflowLosesNothing) {
    constexpr int n = 1500;
    zreap::loop lp(backend::io_uring);
    gated_group kids;
    std::map<pid_t, int> seen, calls;
    for (int i = 0; i < n; ++i)
        lp.watch_child(kids.add(i % 200), [&](const exit_status& s) {
            seen[s.pid] = s.exit_code();
            ++calls[s.pid];
        });
    lp.run_once(0ms);  // submitted
    kids.open();
    for (auto [pid, code] : kids.codes)
        wait_until_zombie(pid);  // every completion posted before the loop reads any
    ASSERT_TRUE(run_until(
        lp, [&] { return seen.size() == static_cast<std::size_t>(n); }, 60s))
        << seen.size() << " of " << n;
    lp.run_once(0ms);
    for (auto [pid, code] : kids.codes) {
        EXPECT_EQ(seen[pid], code);
        EXPECT_EQ(calls[pid], 1);
    }
}

}  // namespace
