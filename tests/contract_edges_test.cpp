// The contract at its edges, for every compiled backend: the window between reaping a child
// and running its exit callback (which waits for the child's output), a pid recycled in that
// window, output that other processes keep writing, an fd number reused by another pipe, a
// loop that moves or dies before its children, and a loop run from its own callback.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

#include "backend_fixture.hpp"
#include "helpers.hpp"

using namespace zreap_test;
using zreap::backend;
using zreap::exit_status;
using zreap::spawn_options;
using zreap::stdio;

namespace {

const std::string helper_path = ZREAP_SPAWN_HELPER;

spawn_options helper(std::vector<std::string> args) {
    spawn_options o;
    o.argv.push_back(helper_path);
    for (auto& a : args)
        o.argv.push_back(std::move(a));
    return o;
}

// Reads at most @p chunk bytes per callback from @p fd into @p got (a byte count) and
// counts the callbacks.
struct slow_reader {
    std::size_t chunk;
    std::size_t got = 0;
    std::size_t calls = 0;
    bool eof = false;
    zreap::source_id id = 0;

    slow_reader(zreap::loop& lp, int fd, std::size_t chunk_bytes) : chunk(chunk_bytes) {
        id = lp.add_fd(fd, ZMQ_POLLIN, [this, fd, &lp](short) {
            ++calls;
            char buf[65536];
            ssize_t n = ::read(fd, buf, std::min(chunk, sizeof buf));
            if (n > 0)
                got += static_cast<std::size_t>(n);
            else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                eof = true;
                lp.remove(id);
            }
        });
    }
};

// The error a call threw: its errno for a std::system_error, -1 for a std::logic_error,
// 0 if it threw nothing.
int thrown_by(const std::function<void()>& f) {
    try {
        f();
    } catch (const std::system_error& e) {
        return e.code().value();
    } catch (const std::logic_error&) {
        return -1;
    }
    return 0;
}

class ContractEdges : public backend_contract_test {};

// From the reap on, the child's handle says reaped and sends nothing, although the exit
// callback still waits for the child's unread output.
TEST_P(ContractEdges, ReapedAndSilentWhileTheExitWaitsForOutput) {
    auto lp = make();
    bool exited = false;
    std::size_t read_at_exit = 0;
    auto o = helper({"write-then-wait", "65536"});  // ignores SIGTERM
    o.stdout_mode = stdio::pipe;
    o.stdin_mode = stdio::pipe;
    std::optional<slow_reader> reader;
    zreap::child c = zreap::spawn(lp, o, [&](const exit_status& s) {
        exited = true;
        read_at_exit = reader->got;
        EXPECT_EQ(s.exit_code(), 0);
    });
    reader.emplace(lp, c.stdout_fd(), 1);  // one byte per callback: a long window
    // A first byte read: the child ignores SIGTERM by now.
    ASSERT_TRUE(run_until(lp, [&] { return reader->got > 0; }));
    c.terminate(std::chrono::hours(1));  // its SIGKILL timer must go at the reap
    c.close_stdin();                     // the child exits now
    ASSERT_TRUE(run_until(lp, [&] { return lp.stats().exits == 1; }));
    ASSERT_FALSE(exited) << "the exit should still wait for 64 KiB of output";
    EXPECT_TRUE(c.reaped()) << "reaped() must be true from the reap on";
    EXPECT_EQ(thrown_by([&] { c.kill(SIGKILL); }), ESRCH);
    EXPECT_EQ(thrown_by([&] { c.kill_group(SIGKILL); }), ESRCH);
    EXPECT_EQ(thrown_by([&] { c.terminate(1ms); }), 0) << "terminate does nothing once reaped";
    // Left: the child's source and the reader; no terminate() timer.
    EXPECT_EQ(lp.size(), 2u);
    reader->chunk = 65536;
    ASSERT_TRUE(run_until(lp, [&] { return exited; }));
    EXPECT_EQ(read_at_exit, 65536u) << "all output is delivered before the exit callback";
}

// The same window with the pid recycled on purpose: inside a private PID namespace (root
// only), ns_last_pid makes a stranger get the reaped child's pid. Neither kill() nor the
// SIGKILL of a terminate() whose grace ends in the window may reach the stranger.
TEST_P(ContractEdges, RecycledPidInTheWindowIsNeverSignalled) {
    if (::geteuid() != 0)
        GTEST_SKIP() << "SKIPPED (needs root): a private PID namespace and ns_last_pid to "
                        "recycle the pid; CI runs it as root";
    const backend b = GetParam();
    std::string failure = in_forked_child([b]() -> std::string {
        if (::unshare(CLONE_NEWPID) != 0)
            return std::string("SKIP unshare(CLONE_NEWPID): ") + std::strerror(errno);
        pid_t init = ::fork();
        if (init < 0)
            return "fork";
        if (init == 0) {
            // pid 1 of the new namespace; everything in it dies with it.
            std::string r;
            try {
                zreap::loop lp(b);
                bool exited = false;
                auto o = helper({"write-then-wait", "65536"});
                o.stdout_mode = stdio::pipe;
                o.stdin_mode = stdio::pipe;
                zreap::child c = zreap::spawn(lp, o, [&](const exit_status&) { exited = true; });
                slow_reader reader(lp, c.stdout_fd(), 1);
                // Once a first byte is read, the child ignores SIGTERM; the SIGKILL is due
                // 100 ms from now, which the test lets pass only once the pid belongs to
                // the stranger.
                if (!run_until(
                        lp, [&] { return reader.got > 0; }, 10s))
                    r = "no output";
                const auto grace = 100ms;
                c.terminate(grace);
                const auto kill_due = clock_type::now() + grace;
                c.close_stdin();  // the child exits now
                if (!run_until(
                        lp, [&] { return lp.stats().exits == 1; }, 10s))
                    r = "child never reaped";
                else if (exited)
                    r = "exit not held back";
                const pid_t pid = c.pid();
                FILE* f = r.empty() ? std::fopen("/proc/sys/kernel/ns_last_pid", "w") : nullptr;
                if (r.empty() && !f)
                    r = std::string("open ns_last_pid: ") + std::strerror(errno);
                if (f) {
                    std::fprintf(f, "%d", static_cast<int>(pid - 1));
                    std::fclose(f);
                }
                pid_t stranger = r.empty() ? ::fork() : -1;
                if (stranger == 0) {
                    for (;;)
                        ::pause();
                }
                if (r.empty() && stranger != pid)
                    r = "the stranger got pid " + std::to_string(stranger) + ", not " +
                        std::to_string(pid);
                if (r.empty()) {
                    int e = thrown_by([&] { c.kill(SIGKILL); });
                    if (e != ESRCH)
                        r = "kill() in the window did not throw ESRCH: " + std::to_string(e);
                    // Let the terminate() grace run out while the exit is still held back.
                    while (clock_type::now() < kill_due + 20ms)
                        ::usleep(5000);
                    for (int i = 0; i < 5; ++i)
                        lp.run_once(0ms);  // dispatches due timers; reads 5 bytes at most
                    if (exited)
                        r = "exit callback ran too early for the test";
                    if (r.empty() && !process_alive(stranger))
                        r = "the stranger with the recycled pid was killed";
                }
                if (stranger > 0)
                    ::kill(stranger, SIGKILL);
                reader.chunk = 65536;
                if (!run_until(
                        lp, [&] { return exited; }, 10s) &&
                    r.empty())
                    r = "exit never reported";
            } catch (const std::exception& e) {
                r = std::string("exception: ") + e.what();
            }
            ssize_t w = ::write(2, r.data(), r.size());
            (void)w;
            ::_exit(r.empty() ? 0 : 1);
        }
        int status = 0;
        while (::waitpid(init, &status, 0) < 0 && errno == EINTR) {
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            return "namespace init failed (its message is on stderr), status " +
                   std::to_string(status);
        return "";
    });
    if (failure.rfind("SKIP ", 0) == 0)
        GTEST_SKIP() << "SKIPPED: " << failure;
    EXPECT_EQ(failure, "");
}

// Bytes that other processes keep writing to the pipe after the child's exit (here a
// grandchild's `yes`) do not hold the exit back forever: what was in the pipe when the
// child was reaped is read first, then the exit callback runs.
TEST_P(ContractEdges, OtherWritersCannotHoldTheExitBackForever) {
    auto lp = make();
    spawn_options o;
    // 60,000 bytes of 'a' from the child, then a grandchild that writes "b\n" forever and
    // fills the pipe before the child exits.
    o.argv = {"/bin/sh", "-c", "head -c 60000 /dev/zero | tr '\\0' a; yes b & sleep 0.1; exit 0"};
    o.stdout_mode = stdio::pipe;
    o.group = spawn_options::group_mode::new_group;
    std::size_t as = 0, total = 0;
    std::size_t as_at_exit = 0;
    bool exited = false;
    zreap::child c = zreap::spawn(lp, o, [&](const exit_status& s) {
        exited = true;
        as_at_exit = as;
        EXPECT_EQ(s.exit_code(), 0);
    });
    const int fd = c.stdout_fd();
    lp.add_fd(fd, ZMQ_POLLIN, [&](short) {
        // Nothing is read until the child has been reaped: the pipe is full then, of the
        // child's 'a's and the grandchild's 'b's, and the grandchild refills it as it goes.
        // One byte per callback, far slower than `yes` refills, so the pipe never runs
        // empty: the exit must be released by the count of bytes read since the reap.
        if (lp.stats().exits == 0)
            return;
        char buf[1];
        ssize_t n = ::read(fd, buf, sizeof buf);
        for (ssize_t i = 0; i < n; ++i)
            as += buf[i] == 'a';
        total += n > 0 ? static_cast<std::size_t>(n) : 0;
    });
    const bool done = run_until(
        lp, [&] { return exited; }, 30s);
    ::kill(-c.pid(), SIGKILL);  // the grandchild, which still holds the group
    ASSERT_TRUE(done) << "the exit callback never ran; " << total << " bytes read";
    EXPECT_EQ(as_at_exit, 60000u) << "the child's own output must be read first";
    std::printf("[ %-9s] exit delivered after %zu bytes read\n",
                std::string(zreap::to_string(GetParam())).c_str(), total);
}

// A held-back exit waits on the child's pipe, not on an fd number: after the child's stdout
// end was released and closed, another pipe under the same number does not hold it.
TEST_P(ContractEdges, HeldBackExitsAreNotKeyedByFdNumber) {
    auto lp = make();
    bool a_exited = false;
    auto oa = helper({"echo"});
    oa.stdin_mode = stdio::pipe;
    oa.stdout_mode = stdio::pipe;
    zreap::child a = zreap::spawn(lp, oa, [&](const exit_status&) { a_exited = true; });
    const int reused = a.release_stdout();
    // Closed, and held by a placeholder meanwhile, so that b's own pipe ends go elsewhere.
    const int placeholder = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_EQ(::dup2(placeholder, reused), reused);
    ::close(placeholder);

    auto ob = helper({"write-then-wait", "65536"});
    ob.stdin_mode = stdio::pipe;
    ob.stdout_mode = stdio::pipe;
    zreap::child b = zreap::spawn(lp, ob, [](const exit_status&) {});
    ASSERT_EQ(::dup2(b.stdout_fd(), reused), reused);  // another pipe, the same number
    std::size_t b_calls = 0;
    const zreap::source_id b_reader = lp.add_fd(reused, ZMQ_POLLIN, [&](short) { ++b_calls; });

    a.close_stdin();  // a exits now, with nothing left to read of its own
    ASSERT_TRUE(run_until(
        lp, [&] { return lp.stats().exits == 1; }, 10s));
    const std::size_t calls_at_reap = b_calls;
    ASSERT_TRUE(run_until(
        lp, [&] { return a_exited; }, 10s));
    EXPECT_LT(b_calls - calls_at_reap, 10u) << "a's exit waited on b's pipe";
    lp.remove(b_reader);
    lp.remove(b.source());
    ::close(reused);
    b.close_stdin();
    ::waitpid(b.pid(), nullptr, 0);
}

// Children follow their loop when it moves: terminate() after the move, and the exit after
// it, work on the loop's new home.
TEST_P(ContractEdges, ChildrenFollowTheirLoopWhenItMoves) {
    std::optional<zreap::loop> lp1(make());
    bool exited = false;
    exit_status st{};
    auto o = helper({"pause"});
    zreap::child c = zreap::spawn(*lp1, o, [&](const exit_status& s) {
        exited = true;
        st = s;
    });
    zreap::loop lp2(std::move(*lp1));
    lp1.reset();
    c.terminate(std::chrono::hours(1));
    ASSERT_TRUE(run_until(lp2, [&] { return exited; }));
    EXPECT_EQ(st.term_signal(), SIGTERM);

    bool exited2 = false;
    zreap::child c2 = zreap::spawn(lp2, o, [&](const exit_status&) { exited2 = true; });
    // Move assignment, through a second handle (one loop at a time: some backends allow no
    // more).
    zreap::loop lp3(std::move(lp2));
    lp2 = std::move(lp3);
    c2.terminate(10ms);
    ASSERT_TRUE(run_until(lp2, [&] { return exited2; }));
    EXPECT_EQ(lp2.size(), 0u);
}

// Once its loop is gone, a child's handle throws instead of touching freed memory or a pid
// that nothing tracks any more.
TEST_P(ContractEdges, SignallingAfterTheLoopIsGoneThrowsLogicError) {
    zreap::child c;
    {
        zreap::loop_options opts;
        opts.which = GetParam();
        opts.children_at_destroy = zreap::destroy_policy::release;
        zreap::loop lp(opts);
        c = zreap::spawn(lp, helper({"pause"}), [](const exit_status&) {});
    }
    EXPECT_FALSE(c.reaped());
    EXPECT_EQ(thrown_by([&] { c.terminate(10ms); }), -1);
    EXPECT_EQ(thrown_by([&] { c.kill(SIGTERM); }), -1);
    ASSERT_EQ(::kill(c.pid(), SIGKILL), 0);  // released: the program's own to end
    int status = 0;
    ASSERT_EQ(::waitpid(c.pid(), &status, 0), c.pid());
    EXPECT_TRUE(WIFSIGNALED(status));
}

// A callback cannot run its own loop: a clear std::logic_error, and the loop goes on.
TEST_P(ContractEdges, RunningTheLoopFromItsCallbackThrowsLogicError) {
    auto lp = make();
    int once_errors = 0, run_errors = 0, ticks = 0;
    lp.add_timer(0ms, 1ms, [&] {
        ++ticks;
        try {
            lp.run_once(0ms);
        } catch (const std::logic_error&) {
            ++once_errors;
        }
        try {
            lp.run();
        } catch (const std::logic_error&) {
            ++run_errors;
        }
        if (ticks == 3)
            lp.stop();
    });
    lp.run();
    EXPECT_EQ(ticks, 3);
    EXPECT_EQ(once_errors, 3);
    EXPECT_EQ(run_errors, 3);
    EXPECT_EQ(watch_until_reported(lp, exit_now(5)).exit_code(), 5)
        << "the loop still reports exits";
}

// A loop may be destroyed by one of its own callbacks; its state lives until that
// dispatch ends, and run() returns.
TEST_P(ContractEdges, DestroyedFromItsOwnCallback) {
    auto lp = std::make_unique<zreap::loop>(make());
    zreap::loop* raw = lp.get();
    raw->add_timer(0ms, 1ms, [&] { lp.reset(); });
    raw->run();
    EXPECT_FALSE(lp);
}

// The first line a child writes to @p fd (non-blocking), waiting for it with a bound.
std::string read_line(int fd) {
    std::string line;
    const auto end = clock_type::now() + 10s;
    while (line.find('\n') == std::string::npos && clock_type::now() < end) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 100) <= 0)
            continue;
        char buf[64];
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        line.append(buf, static_cast<std::size_t>(n));
    }
    return line;
}

// What the destructor does with children still running, per destroy_policy: a spawned
// child (leading a group with a grandchild in it) and a child given to watch_child.
TEST_P(ContractEdges, DestroyPolicies) {
    for (auto policy : {zreap::destroy_policy::kill_spawned, zreap::destroy_policy::kill_all,
                        zreap::destroy_policy::release}) {
        SCOPED_TRACE("policy " + std::to_string(static_cast<int>(policy)));
        gated_child forked(7);
        zreap::loop_options opts;
        opts.which = GetParam();
        opts.children_at_destroy = policy;
        std::optional<zreap::loop> lp(opts);
        auto o = helper({"tree"});
        o.stdout_mode = stdio::pipe;
        o.group = spawn_options::group_mode::new_group;
        zreap::child spawned = zreap::spawn(*lp, o, [](const exit_status&) { ADD_FAILURE(); });
        lp->watch_child(forked.pid(), [](const exit_status&) { ADD_FAILURE(); });
        const pid_t grandchild = std::atoi(read_line(spawned.stdout_fd()).c_str());
        ASSERT_GT(grandchild, 0);
        lp.reset();

        if (policy == zreap::destroy_policy::release) {
            EXPECT_FALSE(spawned.reaped());
            EXPECT_TRUE(process_alive(spawned.pid()));
            EXPECT_TRUE(process_alive(grandchild));
            ::kill(-spawned.pid(), SIGKILL);
            EXPECT_EQ(::waitpid(spawned.pid(), nullptr, 0), spawned.pid());
        } else {
            EXPECT_TRUE(spawned.reaped()) << "a spawned child is killed and reaped";
            errno = 0;
            EXPECT_EQ(::waitpid(spawned.pid(), nullptr, WNOHANG), -1);
            EXPECT_EQ(errno, ECHILD);
            // The grandchild got the group's SIGKILL; an orphan, it is reaped by its new
            // parent a moment later.
            EXPECT_TRUE(gone_within(grandchild, 10s)) << "the spawned child's group is killed";
        }
        int status = 0;
        if (policy == zreap::destroy_policy::kill_all) {
            errno = 0;
            EXPECT_EQ(::waitpid(forked.pid(), &status, WNOHANG), -1) << "killed and reaped";
            EXPECT_EQ(errno, ECHILD);
        } else {
            EXPECT_EQ(::waitpid(forked.pid(), &status, WNOHANG), 0) << "released, still running";
            forked.open();
            ASSERT_EQ(::waitpid(forked.pid(), &status, 0), forked.pid());
            EXPECT_EQ(WEXITSTATUS(status), 7);
        }
    }
}

// A spawned child removed from its loop is left to other code, which may reap it and so
// free its pid: from remove() on, its handle refuses to signal it and a pending terminate()
// SIGKILL goes with the source (it came 50 ms later, at whatever process had the pid).
TEST_P(ContractEdges, RemovedSpawnedChildIsNeverSignalled) {
    auto lp = make();
    spawn_options o = helper({"ignore-term"});
    o.stdout_mode = stdio::pipe;
    int called = 0;
    zreap::child c = zreap::spawn(lp, o, [&](const exit_status&) { ++called; });
    ASSERT_EQ(read_line(c.stdout_fd()), "ready\n");  // SIGTERM is ignored from here on
    c.terminate(50ms);
    lp.remove(c.source());
    EXPECT_EQ(lp.size(), 0u) << "the terminate() timer outlived the child's source";
    EXPECT_EQ(thrown_by([&] { c.kill(SIGKILL); }), -1);
    EXPECT_EQ(thrown_by([&] { c.terminate(10ms); }), -1);
    lp.run_once(300ms);  // well past the grace
    EXPECT_EQ(::waitpid(c.pid(), nullptr, WNOHANG), 0) << "a SIGKILL came after remove()";
    ASSERT_EQ(::kill(c.pid(), SIGKILL), 0);  // the program's own to end now
    int status = 0;
    ASSERT_EQ(::waitpid(c.pid(), &status, 0), c.pid());
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    EXPECT_EQ(called, 0);
}

// A callback that throws ends the dispatch before the signal callbacks, after the loop took
// the wakeup that announced a signal or a request_stop(): neither may be lost. The next
// iteration does not sleep on the signal (a 10 s timer shows whether it did), and the next
// run() stops at once.
TEST_P(ContractEdges, AThrowingCallbackLosesNoSignalAndNoStopRequest) {
    auto lp = make();
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    int signals = 0;
    bool throw_next = false;
    lp.add_signal(SIGUSR2, [&](int) { ++signals; });
    lp.add_fd(p[0], ZMQ_POLLIN, [&](short) {
        char b;
        (void)!::read(p[0], &b, 1);
        if (std::exchange(throw_next, false))
            throw std::runtime_error("from a callback");
    });
    bool late = false;
    zreap::source_id marker = lp.add_timer(10s, 0ms, [&] {
        late = true;
        lp.stop();
    });

    // A signal, and a callback that throws in the same iteration.
    throw_next = true;
    ASSERT_EQ(::write(p[1], "x", 1), 1);
    ASSERT_EQ(::kill(::getpid(), SIGUSR2), 0);
    EXPECT_THROW(lp.run_once(20s), std::runtime_error);
    EXPECT_EQ(signals, 0) << "the throw came first: the signal is still pending";
    EXPECT_EQ(lp.run_once(20s), 1);
    EXPECT_EQ(signals, 1);
    EXPECT_FALSE(late) << "the signal waited for another wakeup";

    // A stop request, and a callback that throws in the same iteration.
    throw_next = true;
    ASSERT_EQ(::write(p[1], "x", 1), 1);
    lp.request_stop();
    EXPECT_THROW(lp.run_once(20s), std::runtime_error);
    lp.run();
    EXPECT_FALSE(late) << "the request_stop() taken before the throw was lost";
    lp.remove(marker);
    ::close(p[0]);
    ::close(p[1]);
}

// A callback that destroys its loop ends that dispatch: the other callbacks that were due
// in it (fds, timers, posted functions) may use what the program freed with the loop.
TEST_P(ContractEdges, DestroyedFromItsOwnCallbackRunsNoOtherCallback) {
    auto lp = std::make_unique<zreap::loop>(make());
    int a[2], b[2];
    ASSERT_EQ(::pipe2(a, O_CLOEXEC), 0);
    ASSERT_EQ(::pipe2(b, O_CLOEXEC), 0);
    ASSERT_EQ(::write(a[1], "x", 1), 1);
    ASSERT_EQ(::write(b[1], "x", 1), 1);
    int calls = 0;
    auto destroy = [&](short) {
        ++calls;
        lp.reset();
    };
    lp->add_fd(a[0], ZMQ_POLLIN, destroy);
    lp->add_fd(b[0], ZMQ_POLLIN, destroy);
    lp->add_timer(0ms, 0ms, [&] { ++calls; });
    lp->post([&] { ++calls; });
    zreap::loop* raw = lp.get();
    raw->run_once(10s);
    EXPECT_FALSE(lp);
    EXPECT_EQ(calls, 1);
    for (int fd : {a[0], a[1], b[0], b[1]})
        ::close(fd);
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Backends, ContractEdges, ::testing::ValuesIn(zreap::compiled_backends()),
                         backend_param_name);
