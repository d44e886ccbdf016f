#pragma once

// What every suite that runs once per compiled backend shares: the test name shows the
// backend, and the contract fixtures check that each test leaves the process's signal mask
// and SIGCHLD disposition as it found them.

#include <gtest/gtest.h>
#include <signal.h>

#include <string>

#include "helpers.hpp"

namespace zreap_test {

/// Names a value-parameterised test after its backend: Backends/Contract.X/pidfd.
inline std::string backend_param_name(const ::testing::TestParamInfo<zreap::backend>& info) {
    return std::string(zreap::to_string(info.param));
}

/// A test run for one backend, which must be usable here, and must leave the signal mask
/// and the SIGCHLD disposition as it found them.
class backend_contract_test : public ::testing::TestWithParam<zreap::backend> {
  protected:
    void SetUp() override {
        ASSERT_TRUE(zreap::backend_usable(GetParam()))
            << zreap::to_string(GetParam()) << " is compiled in but not usable on this machine";
        sigprocmask(SIG_SETMASK, nullptr, &mask_before_);
        sigaction(SIGCHLD, nullptr, &chld_before_);
    }
    void TearDown() override {
        reap_leftovers();
        sigset_t now;
        sigprocmask(SIG_SETMASK, nullptr, &now);
        for (int s = 1; s < NSIG; ++s)
            EXPECT_EQ(sigismember(&now, s), sigismember(&mask_before_, s)) << "signal " << s;
        struct sigaction sa {};
        sigaction(SIGCHLD, nullptr, &sa);
        EXPECT_EQ(sa.sa_handler, chld_before_.sa_handler) << "SIGCHLD disposition not restored";
    }
    zreap::loop make() { return zreap::loop(GetParam()); }
    zreap::capabilities caps() const { return zreap::backend_capabilities(GetParam()); }

    sigset_t mask_before_{};
    struct sigaction chld_before_ {};
};

}  // namespace zreap_test
