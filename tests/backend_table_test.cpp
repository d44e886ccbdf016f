// The backend table: names, the compiled set, the default and ZREAP_BACKEND.

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <iterator>
#include <optional>
#include <string>

#include "helpers.hpp"
#include "zreap_config.h"

using zreap::backend;

namespace {

struct env_guard {
    std::string old;
    bool had = false;
    env_guard() {
        if (const char* v = getenv("ZREAP_BACKEND")) {
            had = true;
            old = v;
        }
    }
    ~env_guard() {
        if (had)
            setenv("ZREAP_BACKEND", old.c_str(), 1);
        else
            unsetenv("ZREAP_BACKEND");
    }
};

TEST(BackendTable, NamesRoundTrip) {
    for (backend b : {backend::pidfd, backend::signalfd, backend::selfpipe, backend::sigaction,
                      backend::libev, backend::io_uring}) {
        auto back = zreap::backend_from_string(zreap::to_string(b));
        ASSERT_TRUE(back);
        EXPECT_EQ(*back, b);
    }
    EXPECT_FALSE(zreap::backend_from_string("nonsense"));
    EXPECT_FALSE(zreap::backend_from_string(""));
}

TEST(BackendTable, CompiledMatchesConfigure) {
    auto c = zreap::compiled_backends();
    auto has = [&](backend b) { return std::find(c.begin(), c.end(), b) != c.end(); };
    EXPECT_EQ(has(backend::pidfd), ZREAP_HAVE_PIDFD == 1);
    EXPECT_EQ(has(backend::signalfd), ZREAP_HAVE_SIGNALFD == 1);
    EXPECT_EQ(has(backend::selfpipe), ZREAP_HAVE_SELFPIPE == 1);
    EXPECT_EQ(has(backend::sigaction), ZREAP_HAVE_SIGACTION == 1);
    EXPECT_EQ(has(backend::libev), ZREAP_HAVE_LIBEV == 1);
    EXPECT_EQ(has(backend::io_uring), ZREAP_HAVE_IO_URING == 1);
}

TEST(BackendTable, EnvironmentOverridesDefault) {
    env_guard g;
    for (backend b : zreap::compiled_backends()) {
        if (!zreap::backend_capabilities(b).multiple_loops)
            continue;
        setenv("ZREAP_BACKEND", std::string(zreap::to_string(b)).c_str(), 1);
        EXPECT_EQ(zreap::default_backend(), b);
        zreap::loop lp;
        EXPECT_EQ(lp.which(), b);
    }
}

TEST(BackendTable, UnknownEnvironmentNameIsAClearError) {
    env_guard g;
    setenv("ZREAP_BACKEND", "nonsense", 1);
    try {
        zreap::loop lp;
        FAIL() << "a loop was made with ZREAP_BACKEND=nonsense";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), EINVAL);
        EXPECT_NE(std::string(e.what()).find("nonsense"), std::string::npos) << e.what();
    }
}

TEST(BackendTable, NotCompiledInIsAClearError) {
    env_guard g;
    auto c = zreap::compiled_backends();
    for (backend b : {backend::pidfd, backend::signalfd, backend::selfpipe, backend::sigaction,
                      backend::libev, backend::io_uring}) {
        if (std::find(c.begin(), c.end(), b) != c.end())
            continue;
        EXPECT_FALSE(zreap::backend_usable(b));
        EXPECT_THROW(zreap::loop{b}, std::system_error);
        setenv("ZREAP_BACKEND", std::string(zreap::to_string(b)).c_str(), 1);
        EXPECT_THROW(zreap::default_backend(), std::system_error);
    }
}

// The table's order is the order of preference that "auto" follows: io_uring, slower with
// many children, after the three that are not; signalfd and libev, which need the program's
// cooperation, last.
TEST(BackendTable, CompiledInOrderOfPreference) {
    const backend preference[] = {backend::pidfd,    backend::selfpipe, backend::sigaction,
                                  backend::io_uring, backend::signalfd, backend::libev};
    auto c = zreap::compiled_backends();
    auto next = std::begin(preference);
    for (backend b : c) {
        next = std::find(next, std::end(preference), b);
        ASSERT_NE(next, std::end(preference))
            << zreap::to_string(b) << " is out of the order of preference";
    }
}

// "auto" is the first usable of what is compiled in, whatever that is (a build with only
// libev, or signalfd and libev, has a default too).
TEST(BackendTable, AutoTakesTheFirstUsableCompiledBackend) {
    env_guard g;
    std::optional<backend> expected;
    for (backend b : zreap::compiled_backends())
        if (zreap::backend_usable(b)) {
            expected = b;
            break;
        }
    ASSERT_TRUE(expected) << "no compiled backend is usable in the test process";
    setenv("ZREAP_BACKEND", "auto", 1);
    EXPECT_EQ(zreap::default_backend(), *expected);
}

// With SIGCHLD ignored no signal-driven backend is usable. pidfd, which needs no signal, is
// then what "auto" takes, or else io_uring, which needs none either; a build without both
// gets an error that names exactly the backends compiled in, never one that is not.
TEST(BackendTable, AutoWithSigchldIgnored) {
    std::string failure = zreap_test::in_forked_child([]() -> std::string {
        ::signal(SIGCHLD, SIG_IGN);
        ::setenv("ZREAP_BACKEND", "auto", 1);
        auto c = zreap::compiled_backends();
        if (std::find(c.begin(), c.end(), backend::pidfd) != c.end()) {
            CHILD_CHECK(zreap::default_backend() == backend::pidfd);
            return "";
        }
        if (zreap::backend_usable(backend::io_uring)) {
            CHILD_CHECK(zreap::default_backend() == backend::io_uring);
            return "";
        }
        try {
            backend b = zreap::default_backend();
            return "auto took " + std::string(zreap::to_string(b)) + " with SIGCHLD ignored";
        } catch (const std::system_error& e) {
            std::string what = e.what();
            CHILD_CHECK(e.code().value() == ENOTSUP);
            CHILD_CHECK(what.find("compiled in") != std::string::npos);
            for (backend b : {backend::pidfd, backend::signalfd, backend::selfpipe,
                              backend::sigaction, backend::libev, backend::io_uring}) {
                bool compiled = std::find(c.begin(), c.end(), b) != c.end();
                bool named = what.find(std::string(zreap::to_string(b))) != std::string::npos;
                if (compiled != named)
                    return what + ": " + std::string(zreap::to_string(b)) +
                           (compiled ? " is compiled in but not named"
                                     : " is named but not compiled in");
            }
        }
        return "";
    });
    EXPECT_EQ(failure, "");
}

}  // namespace
