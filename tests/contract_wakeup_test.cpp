// The original article's point, measured: a flag-then-poll backend can lose a wakeup when
// SIGCHLD lands between its flag check and zmq_poll, and the race-free backends cannot.
//
// ThousandsOfExits: children exit at random short moments, in small batches released at
// once, so that exits land while the loop is between wakeups (in the race window, if it
// has one). The last exits of a batch have nothing after them to interrupt the poll: if
// their signal was lost, only the backend's wakeup cap brings them in. Each child stamps
// CLOCK_MONOTONIC into shared memory right before _exit; the callback stamps when it runs;
// the difference is the exit's latency.
//
//   race-free backends: no lost wakeup and no poll that ended by its timeout (they do not
//                       use the cap at all: a lost exit would wait for the 5 s poll), and
//                       every latency well below the cap;
//   sigaction:          every exit reported exactly once, the lost wakeups counted and
//                       printed (zero is allowed: the window is a few microseconds and a
//                       run may never hit it), every latency at most the cap plus slack.
//
// SignalTakenByAnotherThread makes the lost wakeup certain instead of lucky, so that the
// cap and the counter are tested on every run: the loop thread blocks SIGCHLD and a helper
// thread takes it.

#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

#include "backend_fixture.hpp"
#include "helpers.hpp"

using namespace zreap_test;
using zreap::backend;
using zreap::exit_status;

namespace {

#if defined(__SANITIZE_ADDRESS__)
// fork() copies the page tables of a sanitized process, shadow memory included: several
// milliseconds per child on a loaded machine. Half as many keeps the run near 20 s.
constexpr int children_total = 2000;
#else
constexpr int children_total = 4000;
#endif
constexpr int batch_size = 8;
// Far above the default (50 ms), so that a lost wakeup (latency ~ cap) stands apart from
// the scheduling noise of a loaded machine: with eight test runs sharing two cores under
// ASan, single exits were measured waiting up to a second without any lost wakeup. Each
// lost wakeup costs the sigaction run one cap.
constexpr auto cap = 1000ms;
// What a loaded machine may add to the cap: the child's exit, the kernel's signal, our
// process getting a CPU again.
constexpr auto slack = 500ms;
constexpr auto slow = cap * 3 / 4;

// Latency bounds only mean something on a machine that gives this process a CPU when it
// needs one. On the shared build machine, at load averages near 200 on two cores, single
// exits were measured waiting 1.6 s with every backend and no lost wakeup at all. There the
// bounds are printed, not asserted; the structural checks (reports, counters, polls that
// ended by their timeout) always are.
bool latency_bounds_apply() {
    double load = 0;
    if (::getloadavg(&load, 1) != 1)
        return true;
    long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
    return load <= 4.0 * static_cast<double>(cpus > 0 ? cpus : 1);
}

std::int64_t monotonic_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// Exit stamps written by the children, one slot per child; shared across fork.
class shared_stamps {
  public:
    explicit shared_stamps(std::size_t n) : bytes_(n * sizeof(std::int64_t)) {
        void* p =
            ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            throw std::runtime_error("mmap failed");
        stamps_ = static_cast<volatile std::int64_t*>(p);
    }
    ~shared_stamps() { ::munmap(const_cast<std::int64_t*>(stamps_), bytes_); }
    shared_stamps(const shared_stamps&) = delete;
    shared_stamps& operator=(const shared_stamps&) = delete;
    volatile std::int64_t* data() const { return stamps_; }

  private:
    std::size_t bytes_;
    volatile std::int64_t* stamps_ = nullptr;
};

class ContractWakeup : public ::testing::TestWithParam<backend> {
  protected:
    void SetUp() override {
        ASSERT_TRUE(zreap::backend_usable(GetParam()))
            << to_string(GetParam()) << " is compiled in but not usable on this machine";
    }
    void TearDown() override { await_children_gone(); }
    zreap::capabilities caps() const { return zreap::backend_capabilities(GetParam()); }
};

TEST_P(ContractWakeup, ThousandsOfExitsNoneLostBeyondTheCap) {
    zreap::loop_options opts;
    opts.which = GetParam();
    opts.wakeup_cap = cap;
    zreap::loop lp(opts);

    shared_stamps stamps(children_total);
    std::mt19937 rng(20240611);  // fixed: a failure can be rerun as it was
    // Delays within a batch: 0, or select's shortest sleep (its timer slack, ~50 us) plus a
    // little, so that the batch's exits crowd in on the loop's wakeups.
    std::uniform_int_distribution<int> delay_us(0, 30);

    std::vector<std::int64_t> latency_ns(children_total, -1);
    std::vector<int> reported(children_total, 0);
    int wrong_status = 0;

    for (int first = 0; first < children_total; first += batch_size) {
        const int last = std::min(first + batch_size, children_total);
        int gate[2];
        ASSERT_EQ(::pipe2(gate, O_CLOEXEC), 0);
        for (int i = first; i < last; ++i) {
            const int rd = gate[0];
            const int us = delay_us(rng);
            volatile std::int64_t* slot = stamps.data() + i;
            pid_t pid = fork_child(
                [rd, us, slot, i] {
                    await_gate(rd);
                    // select, not nanosleep: it is async-signal-safe, and this child was
                    // forked from a process that may have threads.
                    timeval tv{0, us};
                    if (us > 0)
                        ::select(0, nullptr, nullptr, nullptr, &tv);
                    timespec ts{};
                    ::clock_gettime(CLOCK_MONOTONIC, &ts);
                    *slot = std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
                    return i % 256;
                },
                rd);
            lp.watch_child(pid, [&, i](const exit_status& s) {
                const std::int64_t now = monotonic_ns();
                ++reported[i];
                if (!s.exited() || s.exit_code() != i % 256)
                    ++wrong_status;
                const std::int64_t stamped = stamps.data()[i];
                latency_ns[i] = stamped > 0 ? now - stamped : -1;
            });
        }
        ::close(gate[0]);
        ::close(gate[1]);  // the batch sees EOF at once

        auto batch_done = [&] {
            for (int i = first; i < last; ++i)
                if (!reported[i])
                    return false;
            return true;
        };
        // Long waits: a race-free backend must be woken by the exits themselves, and a
        // lost wakeup in one would show as a latency of seconds.
        const auto give_up = clock_type::now() + 30s;
        while (!batch_done() && clock_type::now() < give_up)
            lp.run_once(5000ms);
        ASSERT_TRUE(batch_done()) << "children " << first << ".." << last - 1
                                  << " not all reported within the bound";
    }
    const zreap::loop_stats st = lp.stats();  // before the zero-timeout poll below
    lp.run_once(0ms);                         // a duplicate report would come now

    std::vector<std::int64_t> sorted;
    int not_stamped = 0, twice = 0, slow_exits = 0;
    for (int i = 0; i < children_total; ++i) {
        if (reported[i] != 1)
            ++twice;
        if (latency_ns[i] < 0) {
            ++not_stamped;
            continue;
        }
        sorted.push_back(latency_ns[i]);
        if (latency_ns[i] >= std::chrono::nanoseconds(slow).count())
            ++slow_exits;
    }
    EXPECT_EQ(twice, 0) << "exits not reported exactly once";
    EXPECT_EQ(wrong_status, 0);
    EXPECT_EQ(not_stamped, 0) << "children whose exit stamp was missing";
    ASSERT_FALSE(sorted.empty());
    std::sort(sorted.begin(), sorted.end());
    auto ms = [](std::int64_t ns) { return static_cast<double>(ns) / 1e6; };
    const std::int64_t max_ns = sorted.back();
    std::printf(
        "[ %-9s] %d exits: latency median %.3f ms, p99 %.3f ms, max %.3f ms; "
        "%d slower than %lld ms; lost wakeups %llu; polls %llu, EINTR %llu (cap %lld ms)\n",
        std::string(to_string(GetParam())).c_str(), children_total, ms(sorted[sorted.size() / 2]),
        ms(sorted[sorted.size() * 99 / 100]), ms(max_ns), slow_exits,
        static_cast<long long>(std::chrono::milliseconds(slow).count()),
        static_cast<unsigned long long>(st.lost_wakeups), static_cast<unsigned long long>(st.polls),
        static_cast<unsigned long long>(st.interrupted), static_cast<long long>(cap.count()));
    RecordProperty("lost_wakeups", static_cast<int>(st.lost_wakeups));
    RecordProperty("max_latency_us", static_cast<int>(max_ns / 1000));

    const bool bounds = latency_bounds_apply();
    if (!bounds)
        std::printf("[ %-9s] machine overloaded: latency bounds printed, not asserted\n",
                    std::string(to_string(GetParam())).c_str());
    if (caps().race_free) {
        EXPECT_EQ(st.lost_wakeups, 0u);
        // Nothing but exits can end these polls, so a poll that woke with nothing to do
        // ended by its timeout: a wakeup lost whatever the latencies say.
        EXPECT_EQ(st.idle_wakeups, 0u) << "a poll ended by its timeout";
        if (bounds) {
            EXPECT_LT(max_ns, std::chrono::nanoseconds(cap / 2).count())
                << "an exit waited " << ms(max_ns) << " ms, not woken by the exit itself";
        }
    } else if (bounds) {
        EXPECT_LE(max_ns, std::chrono::nanoseconds(cap + slack).count())
            << "an exit waited longer than the wakeup cap plus " << slack.count()
            << " ms of scheduling slack";
    }
}

// The loop thread blocks SIGCHLD and a helper thread does not, so the kernel delivers every
// SIGCHLD to the helper. A race-free backend does not care where the signal lands (or uses
// none). sigaction's handler sets the flag on the helper and forwards the signal to the
// loop thread, where it stays pending: no EINTR, the lost wakeup made certain once the
// loop is inside zmq_poll. The exit must then arrive after the cap, not later, and be
// counted. The child exits 20 ms after its gate opens so that the loop is waiting by
// then; if the loop was slower than that (a starved machine), it sees the flag before it
// polls, which is prompt and not a lost wakeup, and the attempt is repeated.
TEST_P(ContractWakeup, SignalTakenByAnotherThread) {
    constexpr auto this_cap = 500ms;
    constexpr int attempts = 5;
    const bool bounds = latency_bounds_apply();
    sigset_t chld, mask_before;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &chld, &mask_before), 0);
    {
        zreap::loop_options opts;
        opts.which = GetParam();
        opts.wakeup_cap = this_cap;
        zreap::loop lp(opts);

        // Backends that need SIGCHLD blocked in every thread get a helper that blocks it
        // too (inherited): the scenario then only checks that they stay prompt.
        const bool helper_takes_it = !caps().needs_sigchld_blocked;
        int park[2];
        ASSERT_EQ(::pipe2(park, O_CLOEXEC), 0);
        std::thread helper([&chld, rd = park[0], helper_takes_it] {
            if (helper_takes_it)
                pthread_sigmask(SIG_UNBLOCK, &chld, nullptr);
            // SA_RESTART (the hub's handler) restarts read; EOF ends the thread.
            await_gate(rd);
        });

        bool cap_path_seen = false;
        for (int attempt = 0; attempt < attempts && !cap_path_seen; ++attempt) {
            int gate[2];
            ASSERT_EQ(::pipe2(gate, O_CLOEXEC), 0);
            const int rd = gate[0];
            pid_t pid = fork_child(
                [rd] {
                    await_gate(rd);
                    timeval tv{0, 20'000};
                    ::select(0, nullptr, nullptr, nullptr, &tv);
                    return 11;
                },
                rd);
            ::close(rd);
            std::int64_t got = 0;
            exit_status seen;
            lp.watch_child(pid, [&](const exit_status& s) {
                got = monotonic_ns();
                seen = s;
            });
            lp.run_once(0ms);
            const zreap::loop_stats before = lp.stats();  // the poll above counts as idle
            const std::int64_t opened = monotonic_ns();
            ::close(gate[1]);
            const auto give_up = clock_type::now() + 20s;
            while (got == 0 && clock_type::now() < give_up)
                lp.run_once(5000ms);
            ASSERT_NE(got, 0) << "exit never reported";
            EXPECT_EQ(seen.exit_code(), 11);

            const auto latency = std::chrono::nanoseconds(got - opened);
            const auto after = lp.stats();
            const auto lost = after.lost_wakeups - before.lost_wakeups;
            std::printf(
                "[ %-9s] SIGCHLD on another thread, attempt %d: gate to callback %.3f ms "
                "(child waits 20 ms), lost wakeups %llu (cap %lld ms)%s\n",
                std::string(to_string(GetParam())).c_str(), attempt + 1, latency.count() / 1e6,
                static_cast<unsigned long long>(lost), static_cast<long long>(this_cap.count()),
                bounds ? "" : "; machine overloaded, latency bounds not asserted");
            if (caps().race_free) {
                EXPECT_EQ(lost, 0u);
                EXPECT_EQ(after.idle_wakeups - before.idle_wakeups, 0u)
                    << "a poll ended by its timeout";
                if (bounds) {
                    EXPECT_LT(latency, this_cap / 2) << "the exit waited for a timeout";
                }
            } else if (latency >= this_cap - 10ms) {
                // Nothing but the cap brought it in, and it was counted.
                cap_path_seen = true;
                EXPECT_EQ(lost, 1u) << "the wakeup the cap recovered was not counted";
                if (bounds) {
                    EXPECT_LE(latency, this_cap + slack);
                }
            } else {
                EXPECT_EQ(lost, 0u) << "a prompt exit counted as a lost wakeup";
            }
        }
        if (!caps().race_free) {
            EXPECT_TRUE(cap_path_seen) << "in " << attempts << " attempts the loop never "
                                       << "waited in zmq_poll when the exit came";
        }

        ::close(park[1]);
        helper.join();
        ::close(park[0]);
    }
    // The forwarded SIGCHLD may still be pending on this thread; with zreap's handler gone
    // and SIGCHLD back at SIG_DFL, unblocking discards it.
    ASSERT_EQ(pthread_sigmask(SIG_SETMASK, &mask_before, nullptr), 0);
}

// While the loop's queue of reaped-but-undelivered exits is full (here: one exit held back
// by drain_first, with a budget of one exit per iteration), the loop does not ask the
// backend to reap. An exit whose signal came in meanwhile must still be found at once when
// the queue drains, not by a timeout: for sigaction, a flag taken before a skipped reap
// must not be forgotten.
TEST_P(ContractWakeup, ExitDuringFullQueueIsNotDelayed) {
    zreap::loop_options opts;
    opts.which = GetParam();
    opts.wakeup_cap = cap;
    opts.max_exits_per_iteration = 1;
    zreap::loop lp(opts);

    int out[2];
    ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
    // Unread output holds the first exit back. 64 bytes: a callback that reads nothing
    // counts as one byte read (see watch_options::drain_first), so the two callbacks below
    // that read nothing do not release it.
    const char bytes[64] = {};
    ASSERT_EQ(::write(out[1], bytes, sizeof bytes), 64);
    bool may_read = false;
    lp.add_fd(out[0], ZMQ_POLLIN, [&](short) {
        char buf[64];
        if (may_read) {
            EXPECT_EQ(::read(out[0], buf, sizeof buf), 64);
        }
    });

    pid_t first = exit_now(1);
    wait_until_zombie(first);
    bool first_done = false;
    zreap::watch_options held;
    held.drain_first = {out[0]};
    lp.watch_child(
        first, [&](const exit_status&) { first_done = true; }, held);
    gated_child second(2);
    std::int64_t second_done = 0;
    lp.watch_child(second.pid(), [&](const exit_status&) { second_done = monotonic_ns(); });

    lp.run_once(0ms);  // reaps the first exit; it waits for its output
    ASSERT_FALSE(first_done);
    second.open();
    wait_until_zombie(second.pid());
    lp.run_once(0ms);  // SIGCHLD has come; the queue is full, nothing is reaped
    EXPECT_FALSE(first_done);
    EXPECT_EQ(second_done, 0);

    may_read = true;
    const zreap::loop_stats before = lp.stats();
    const std::int64_t drained = monotonic_ns();
    const auto give_up = clock_type::now() + 20s;
    while (second_done == 0 && clock_type::now() < give_up)
        lp.run_once(5000ms);
    ASSERT_NE(second_done, 0) << "second exit never reported";
    EXPECT_TRUE(first_done);
    const auto latency = std::chrono::nanoseconds(second_done - drained);
    const auto after = lp.stats();
    std::printf("[ %-9s] exit during a full queue: reported %.3f ms after the queue drained\n",
                std::string(to_string(GetParam())).c_str(), latency.count() / 1e6);
    EXPECT_EQ(after.lost_wakeups - before.lost_wakeups, 0u)
        << "the exit was found only by the wakeup cap";
    if (latency_bounds_apply()) {
        EXPECT_LT(latency, cap / 2);
    }
    ::close(out[0]);
    ::close(out[1]);
}

// A cap of zero would turn a capped backend into a busy loop, and a negative one into no
// bound at all: refused with EINVAL. Race-free backends ignore the cap.
TEST_P(ContractWakeup, NonPositiveWakeupCap) {
    for (auto bad : {0ms, -5ms}) {
        zreap::loop_options opts;
        opts.which = GetParam();
        opts.wakeup_cap = bad;
        if (caps().race_free) {
            EXPECT_NO_THROW(zreap::loop lp(opts));
            continue;
        }
        try {
            zreap::loop lp(opts);
            ADD_FAILURE() << "wakeup_cap " << bad.count() << " ms was accepted";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code().value(), EINVAL);
            EXPECT_NE(std::string(e.what()).find("wakeup_cap"), std::string::npos) << e.what();
        }
    }
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Backends, ContractWakeup, ::testing::ValuesIn(zreap::compiled_backends()),
                         backend_param_name);
