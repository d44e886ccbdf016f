// The backend table: names, the compiled set, the default and ZREAP_BACKEND.

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>

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

TEST(BackendTable, AutoPrefersPidfdThenSelfpipe) {
    env_guard g;
    setenv("ZREAP_BACKEND", "auto", 1);
    backend expected = zreap::backend_usable(backend::pidfd)      ? backend::pidfd
                       : zreap::backend_usable(backend::selfpipe) ? backend::selfpipe
                                                                  : backend::sigaction;
    EXPECT_EQ(zreap::default_backend(), expected);
}

}  // namespace
