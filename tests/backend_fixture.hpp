#pragma once

// What every suite that runs once per compiled backend shares: the test name shows the
// backend, and the contract fixtures check that each test leaves the process's signal mask
// and SIGCHLD disposition as it found them.

#include <gtest/gtest.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#include <cerrno>
#include <chrono>
#include <string>

#include "helpers.hpp"

namespace zreap_test {

/// Names a value-parameterised test after its backend: Backends/Contract.X/pidfd.
inline std::string backend_param_name(const ::testing::TestParamInfo<zreap::backend>& info) {
    return std::string(zreap::to_string(info.param));
}

/// The calling thread's signal mask and the SIGCHLD disposition, as they were when it was
/// made; the expect_* checks compare them with now.
struct signal_state {
    sigset_t mask{};
    struct sigaction chld {};
    signal_state() {
        ::pthread_sigmask(SIG_SETMASK, nullptr, &mask);
        ::sigaction(SIGCHLD, nullptr, &chld);
    }
    /// Every signal blocked then is blocked now, and no other.
    void expect_mask_unchanged() const {
        sigset_t now;
        ::pthread_sigmask(SIG_SETMASK, nullptr, &now);
        for (int s = 1; s < NSIG; ++s)
            EXPECT_EQ(sigismember(&now, s), sigismember(&mask, s)) << "signal " << s;
    }
    /// SIGCHLD has the handler (or SIG_DFL/SIG_IGN) it had then.
    void expect_chld_handler_unchanged() const {
        struct sigaction sa {};
        ::sigaction(SIGCHLD, nullptr, &sa);
        EXPECT_EQ(sa.sa_handler, chld.sa_handler) << "SIGCHLD disposition not restored";
    }
};

/// Waits until every child of this process has exited, reaping each, for at most @p bound
/// (then the test fails). A test's gated children are let go by their destructors as the
/// test ends and exit a moment later, under load seconds later: left alone, their SIGCHLDs
/// land in a later test, where every backend but pidfd wakes up for them (and libev reaps
/// them), and a test that counts polls or idle wakeups fails for nothing it did.
inline void await_children_gone(std::chrono::milliseconds bound = std::chrono::seconds(10)) {
    const auto end = clock_type::now() + bound;
    for (;;) {
        pid_t r = ::waitpid(-1, nullptr, WNOHANG);
        if (r > 0 || (r < 0 && errno == EINTR))
            continue;
        if (r < 0)
            return;  // ECHILD: none left
        if (clock_type::now() >= end) {
            ADD_FAILURE() << "children of this test still running " << bound.count()
                          << " ms after it ended";
            return;
        }
        ::poll(nullptr, 0, 1);  // a child is still running: look again in a millisecond
    }
}

/// A test run for one backend, which must be usable here, and must leave the signal mask
/// and the SIGCHLD disposition as it found them, and no child running.
class backend_contract_test : public ::testing::TestWithParam<zreap::backend> {
  protected:
    void SetUp() override {
        ASSERT_TRUE(zreap::backend_usable(GetParam()))
            << zreap::to_string(GetParam()) << " is compiled in but not usable on this machine";
        before_ = signal_state();
    }
    void TearDown() override {
        await_children_gone();
        before_.expect_mask_unchanged();
        before_.expect_chld_handler_unchanged();
    }
    zreap::loop make() { return zreap::loop(GetParam()); }
    zreap::capabilities caps() const { return zreap::backend_capabilities(GetParam()); }

    signal_state before_;
};

}  // namespace zreap_test
