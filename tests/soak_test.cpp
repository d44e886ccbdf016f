// Soak: many children with random lifetimes, exit codes and kills, per backend, next to a
// few foreign children that belong to somebody else. Every watched exit must be reported
// exactly once with the right status, and every foreign child must still be waitable by its
// owner afterwards (unless the backend declares that it reaps foreign children).
//
//   ZREAP_SOAK_CHILDREN  children per backend (default 100000; CI's soak-short uses fewer)
//   ZREAP_SOAK_ALIVE     most children alive at once (default 500)
//   ZREAP_SOAK_SEED      random seed (default 1; the seed is printed, so a failure replays)
//
// Throughput is printed, never asserted: this is a test of correctness under load.

#include <gtest/gtest.h>
#include <signal.h>
#include <time.h>

#include <cstdio>
#include <random>
#include <vector>

#include "backend_fixture.hpp"
#include "helpers.hpp"

using namespace zreap_test;
using zreap::backend;
using zreap::exit_status;

namespace {

constexpr int kill_signals[] = {SIGKILL, SIGTERM, SIGINT, SIGHUP, SIGUSR1};

long env_number(const char* name, long fallback) {
    const char* v = std::getenv(name);
    if (!v || !*v)
        return fallback;
    char* end = nullptr;
    long n = std::strtol(v, &end, 10);
    return (end && *end == 0 && n > 0) ? n : fallback;
}

struct record {
    pid_t pid = 0;
    int code = -1;   // expected exit code, or -1 when the child is killed
    int signal = 0;  // expected terminating signal, or 0
    int calls = 0;
    exit_status got;
};

class Soak : public ::testing::TestWithParam<backend> {};

TEST_P(Soak, RandomLifetimesCodesAndKills) {
    const backend b = GetParam();
    const long total = env_number("ZREAP_SOAK_CHILDREN", 100000);
    const long max_alive = env_number("ZREAP_SOAK_ALIVE", 500);
    const unsigned long seed = static_cast<unsigned long>(env_number("ZREAP_SOAK_SEED", 1));
    constexpr int foreign_count = 10;

    std::mt19937_64 rng(seed);
    auto uniform = [&](long lo, long hi) {
        return std::uniform_int_distribution<long>(lo, hi)(rng);
    };

    const auto fds_before = open_fds();
    std::vector<record> recs(static_cast<std::size_t>(total));
    std::vector<std::pair<pid_t, int>> foreign;  // pid, exit code its owner expects
    long launched = 0, reported = 0, alive = 0, killed = 0;
    bool cloexec_checked = false;
    const auto start = clock_type::now();
    {
        zreap::loop lp(b);
        const bool reaps_foreign = lp.caps().reaps_foreign_children;

        auto launch = [&] {
            record& r = recs[static_cast<std::size_t>(launched)];
            const bool to_kill = uniform(0, 9) == 0;
            const long lifetime_us = uniform(0, 20000);
            if (to_kill) {
                r.signal = kill_signals[uniform(0, 4)];
                r.pid = fork_child([] {
                    // Inherited SIG_IGN (nohup, a CI harness) would make it unkillable.
                    for (int s : kill_signals)
                        ::signal(s, SIG_DFL);
                    for (;;)
                        ::pause();
                    return 0;
                });
                pid_t pid = r.pid;
                int sig = r.signal;
                // It cannot exit on its own, so it is still unreaped when the timer fires.
                lp.add_timer(std::chrono::milliseconds(lifetime_us / 1000), 0ms,
                             [pid, sig, &killed] {
                                 ::kill(pid, sig);
                                 ++killed;
                             });
            } else {
                r.code = static_cast<int>(uniform(0, 255));
                int code = r.code;
                r.pid = fork_child([lifetime_us, code] {
                    struct timespec ts {
                        0, lifetime_us * 1000
                    };
                    while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
                    }
                    return code;
                });
            }
            lp.watch_child(r.pid, [&r, &reported, &alive](const exit_status& s) {
                ++r.calls;
                r.got = s;
                ++reported;
                --alive;
            });
            ++launched;
            ++alive;
            // The foreign children appear one by one through the run and die at random.
            if (static_cast<long>(foreign.size()) < foreign_count &&
                launched * foreign_count >= total * static_cast<long>(foreign.size())) {
                int code = 100 + static_cast<int>(foreign.size());
                long ms = uniform(0, 200);
                pid_t pid = ::fork();
                if (pid == 0) {
                    struct timespec ts {
                        ms / 1000, (ms % 1000) * 1000000
                    };
                    ::nanosleep(&ts, nullptr);
                    ::_exit(code);
                }
                ASSERT_GT(pid, 0);
                foreign.emplace_back(pid, code);
            }
        };

        auto last_progress = clock_type::now();
        long last_reported = 0;
        while (reported < total) {
            while (launched < total && alive < max_alive)
                launch();
            if (!cloexec_checked && launched >= total / 2) {
                // Mid-run, with hundreds of children watched: every fd zreap has opened
                // (the pidfd backend holds one per child) must be close-on-exec.
                cloexec_checked = true;
                for (int fd : open_fds()) {
                    if (fds_before.count(fd))
                        continue;
                    int flags = ::fcntl(fd, F_GETFD);
                    EXPECT_TRUE(flags >= 0 && (flags & FD_CLOEXEC))
                        << "fd " << fd << " lacks FD_CLOEXEC";
                }
            }
            lp.run_once(100ms);
            if (reported != last_reported) {
                last_reported = reported;
                last_progress = clock_type::now();
            } else if (clock_type::now() - last_progress > 30s) {
                break;  // no exit for 30 s: something was lost; the counts below say what
            }
        }
        lp.run_once(0ms);  // a duplicate report would surface here

        long lost = 0, duplicated = 0, wrong = 0;
        for (long i = 0; i < launched; ++i) {
            const record& r = recs[static_cast<std::size_t>(i)];
            if (r.calls == 0) {
                if (++lost <= 5)
                    ADD_FAILURE() << "lost: pid " << r.pid;
                continue;
            }
            if (r.calls > 1 && ++duplicated <= 5)
                ADD_FAILURE() << "reported twice: pid " << r.pid;
            bool right = r.got.pid == r.pid &&
                         (r.signal ? r.got.signaled() && r.got.term_signal() == r.signal
                                   : r.got.exited() && r.got.exit_code() == r.code);
            if (!right && ++wrong <= 5)
                ADD_FAILURE() << "pid " << r.pid << ": got '" << to_string(r.got) << "', expected "
                              << (r.signal ? "signal " + std::to_string(r.signal)
                                           : "code " + std::to_string(r.code));
        }
        EXPECT_EQ(launched, total);
        EXPECT_EQ(lost, 0);
        EXPECT_EQ(duplicated, 0);
        EXPECT_EQ(wrong, 0);
        EXPECT_TRUE(cloexec_checked);

        const double secs = std::chrono::duration<double>(clock_type::now() - start).count();
        std::printf(
            "[soak] %-9s %ld children (%ld killed, %ld foreign), %.2f s, %.0f exits/s, "
            "seed %lu\n",
            std::string(to_string(b)).c_str(), reported, killed, static_cast<long>(foreign.size()),
            secs, reported / secs, seed);
        std::fflush(stdout);
        RecordProperty("exits_per_second", static_cast<int>(reported / secs));

        // The owner of the foreign children collects them.
        ASSERT_EQ(foreign.size(), static_cast<std::size_t>(foreign_count));
        for (auto [pid, code] : foreign) {
            int status = 0;
            pid_t r;
            while ((r = ::waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
            }
            if (reaps_foreign)
                continue;  // declared: libev's waitpid(-1) may have taken it
            ASSERT_EQ(r, pid) << "foreign child " << pid << " was reaped by the loop";
            EXPECT_TRUE(WIFEXITED(status));
            EXPECT_EQ(WEXITSTATUS(status), code);
        }
    }
    EXPECT_EQ(reap_leftovers(), 0) << "zombies left behind";
    EXPECT_EQ(open_fds(), fds_before) << "fds left open after the loop was destroyed";
}

INSTANTIATE_TEST_SUITE_P(Backends, Soak, ::testing::ValuesIn(zreap::compiled_backends()),
                         backend_param_name);

}  // namespace
