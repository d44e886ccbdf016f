// Linked into the test programs: after every test, the process must hold exactly the fds
// it held before the test, so a loop that leaks an fd on any path of any test (an error
// path, a callback that throws, a destructor with children still watched) fails that test.

#include <gtest/gtest.h>

#include <sstream>

#include "helpers.hpp"

namespace {

class fd_check final : public ::testing::EmptyTestEventListener {
    std::set<int> before_;

    void OnTestStart(const ::testing::TestInfo&) override { before_ = zreap_test::open_fds(); }

    // Listeners hear OnTestEnd in reverse order of appending, so this runs before the
    // result printers and a failure added here still belongs to the test that leaked.
    void OnTestEnd(const ::testing::TestInfo& info) override {
        if (info.result()->Skipped())
            return;
        auto after = zreap_test::open_fds();
        if (after == before_)
            return;
        std::ostringstream diff;
        for (int fd : after)
            if (!before_.count(fd))
                diff << " +" << fd;
        for (int fd : before_)
            if (!after.count(fd))
                diff << " -" << fd;
        ADD_FAILURE() << "open fds changed across the test:" << diff.str();
    }
};

const bool installed = [] {
    ::testing::UnitTest::GetInstance()->listeners().Append(new fd_check);
    return true;
}();

}  // namespace
