// zreap::spawn, for every compiled backend: what the child gets (argv, env, cwd, stdio,
// group, a clean signal state, no stray fds), what the caller gets (exec errors as
// exceptions, pipes ready for the loop, kill and terminate), and that exits are reported
// once, after the child's output.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif
#include <zmq.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "backend_fixture.hpp"
#include "helpers.hpp"

#if ZREAP_TEST_SECCOMP
#include <sched.h>

#include "seccomp_filter.hpp"
#endif

using namespace zreap_test;
using zreap::backend;
using zreap::exit_status;
using zreap::spawn_options;
using zreap::stdio;

namespace {

const std::string helper_path = ZREAP_SPAWN_HELPER;

// Everything one child produced: its exit and what came out of its stdout/stderr pipes.
struct outcome {
    bool exited = false;
    exit_status status{};
    std::string out, err;
    bool out_eof = false, err_eof = false;
    // Bytes of stdout read when the exit callback ran.
    std::size_t out_at_exit = 0;

    // An exit callback that records the exit here.
    std::function<void(const exit_status&)> on_exit() {
        return [this](const exit_status& s) {
            exited = true;
            status = s;
            out_at_exit = out.size();
        };
    }
};

// One read of at most @p chunk bytes per call, like a user's callback would do; removes
// itself at EOF. A chunk smaller than the pipe's buffer means several calls per pipeful.
void capture(zreap::loop& lp, int fd, std::string& sink, bool& eof, std::size_t chunk = 65536) {
    if (fd < 0)
        return;
    auto id = std::make_shared<zreap::source_id>();
    *id = lp.add_fd(fd, ZMQ_POLLIN, [&lp, fd, &sink, &eof, id, chunk](short) {
        char buf[65536];
        ssize_t n = ::read(fd, buf, std::min(chunk, sizeof buf));
        if (n > 0) {
            sink.append(buf, static_cast<std::size_t>(n));
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            eof = true;
            lp.remove(*id);
        }
    });
}

std::string temp_file(const std::string& content, mode_t mode) {
    std::string path =
        (std::filesystem::temp_directory_path() /
         ("zreap-spawn-" + std::to_string(::getpid()) + "-" + std::to_string(std::rand())))
            .string();
    std::ofstream(path) << content;
    ::chmod(path.c_str(), mode);
    return path;
}

class Spawn : public ::testing::TestWithParam<backend> {
  protected:
    void SetUp() override {
        ASSERT_TRUE(zreap::backend_usable(GetParam()));
        signals_before_ = signal_state();
        fds_before_ = open_fds();
    }
    void TearDown() override {
        EXPECT_EQ(reap_leftovers(), 0) << "a child was left unreaped";
        signals_before_.expect_mask_unchanged();
        EXPECT_EQ(open_fds(), fds_before_) << "fds leaked";
    }

    zreap::loop make() { return zreap::loop(GetParam()); }

    static spawn_options helper(std::vector<std::string> args) {
        spawn_options o;
        o.argv.push_back(helper_path);
        for (auto& a : args)
            o.argv.push_back(std::move(a));
        return o;
    }

    // Spawns, captures the pipes, runs until the exit has been reported and the pipes
    // have hit EOF.
    outcome run(spawn_options o, std::size_t chunk = 65536) {
        auto lp = make();
        outcome r;
        zreap::child c = zreap::spawn(lp, o, r.on_exit());
        capture(lp, c.stdout_fd(), r.out, r.out_eof, chunk);
        capture(lp, c.stderr_fd(), r.err, r.err_eof, chunk);
        bool ok = run_until(lp, [&] {
            return r.exited && (c.stdout_fd() < 0 || r.out_eof) && (c.stderr_fd() < 0 || r.err_eof);
        });
        EXPECT_TRUE(ok) << "child did not finish";
        return r;
    }

    static int errno_of(const std::function<void()>& f) {
        try {
            f();
        } catch (const std::system_error& e) {
            return e.code().value();
        }
        return 0;
    }

    // What a spawn threw: errno and message; {0, ""} if it threw nothing.
    struct failure {
        int err = 0;
        std::string what;
        bool says(const std::string& s) const { return what.find(s) != std::string::npos; }
    };
    static failure failure_of(const std::function<void()>& f) {
        try {
            f();
        } catch (const std::system_error& e) {
            return {e.code().value(), e.what()};
        }
        return {};
    }

    // The errno spawn throws for a program file holding @p content with @p mode.
    int errno_of_spawning_file(const std::string& content, mode_t mode) {
        auto lp = make();
        std::string path = temp_file(content, mode);
        spawn_options o;
        o.argv = {path};
        int err = errno_of([&] { (void)zreap::spawn(lp, o, [](const exit_status&) {}); });
        ::unlink(path.c_str());
        return err;
    }

    signal_state signals_before_;
    std::set<int> fds_before_;
};

std::set<std::string> lines(const std::string& s) {
    std::set<std::string> out;
    std::istringstream in(s);
    for (std::string l; std::getline(in, l);)
        out.insert(l);
    return out;
}

TEST_P(Spawn, ReportsExitCodes) {
    for (int code : {0, 3, 255}) {
        auto o = helper({"exit", std::to_string(code)});
        outcome r = run(o);
        ASSERT_TRUE(r.exited);
        EXPECT_TRUE(r.status.exited());
        EXPECT_EQ(r.status.exit_code(), code);
    }
}

TEST_P(Spawn, ReportsSignals) {
    for (int sig : {SIGKILL, SIGTERM, SIGUSR1}) {
        outcome r = run(helper({"signal", std::to_string(sig)}));
        ASSERT_TRUE(r.exited);
        EXPECT_TRUE(r.status.signaled());
        EXPECT_EQ(r.status.term_signal(), sig);
    }
}

TEST_P(Spawn, PidfdOnlyWithThePidfdBackend) {
    auto lp = make();
    bool done = false;
    zreap::child c =
        zreap::spawn(lp, helper({"exit", "0"}), [&](const exit_status&) { done = true; });
    EXPECT_GT(c.pid(), 0);
    // The build's probe says whether clone(CLONE_PIDFD) is compiled in; the pidfd backend
    // must then get the pidfd from clone, and no other backend gets one.
    if (GetParam() == backend::pidfd && ZREAP_EXPECT_CLONE_PIDFD) {
        ASSERT_GE(c.pidfd(), 0);
        EXPECT_TRUE(::fcntl(c.pidfd(), F_GETFD) & FD_CLOEXEC);
        // The kernel says which process a pidfd names.
        std::ifstream info("/proc/self/fdinfo/" + std::to_string(c.pidfd()));
        std::string key, value, named;
        while (info >> key >> value)
            if (key == "Pid:")
                named = value;
        EXPECT_EQ(named, std::to_string(c.pid()));
    } else {
        EXPECT_EQ(c.pidfd(), -1);
    }
    ASSERT_TRUE(run_until(lp, [&] { return done; }));
    EXPECT_TRUE(c.reaped());
}

TEST_P(Spawn, MissingProgramThrowsEnoent) {
    auto lp = make();
    bool called = false;
    auto cb = [&](const exit_status&) { called = true; };
    spawn_options o;
    o.argv = {"/nonexistent/zreap-no-such-program"};
    failure f = failure_of([&] { (void)zreap::spawn(lp, o, cb); });
    EXPECT_EQ(f.err, ENOENT);
    EXPECT_TRUE(f.says("zreap::spawn(/nonexistent/zreap-no-such-program): execve")) << f.what;
    o.argv = {"zreap-no-such-program-on-path"};
    f = failure_of([&] { (void)zreap::spawn(lp, o, cb); });
    EXPECT_EQ(f.err, ENOENT);
    EXPECT_TRUE(f.says("execve")) << f.what;
    EXPECT_EQ(lp.size(), 0u) << "a failed spawn must not register anything";
    EXPECT_EQ(reap_leftovers(), 0) << "the failed child must be reaped by spawn itself";
    EXPECT_FALSE(called);
    // A failure report is the failed spawn's alone: the next spawn succeeds.
    int code = -1;
    (void)zreap::spawn(lp, helper({"exit", "4"}),
                       [&](const exit_status& s) { code = s.exit_code(); });
    ASSERT_TRUE(run_until(lp, [&] { return code >= 0; }));
    EXPECT_EQ(code, 4);
}

TEST_P(Spawn, NonExecutableFileThrowsEacces) {
    EXPECT_EQ(errno_of_spawning_file("#!/bin/sh\nexit 0\n", 0644), EACCES);
    EXPECT_EQ(reap_leftovers(), 0);
}

TEST_P(Spawn, UnknownFormatThrowsEnoexec) {
    // No shebang, no ELF header: execve says ENOEXEC, and spawn does not retry with /bin/sh.
    EXPECT_EQ(errno_of_spawning_file("this is not a program\n", 0755), ENOEXEC);
    EXPECT_EQ(reap_leftovers(), 0);
}

TEST_P(Spawn, MissingCwdThrowsEnoent) {
    auto lp = make();
    auto o = helper({"exit", "0"});
    o.cwd = "/nonexistent/zreap-dir";
    failure f = failure_of([&] { (void)zreap::spawn(lp, o, [](const exit_status&) {}); });
    EXPECT_EQ(f.err, ENOENT);
    EXPECT_TRUE(f.says("chdir to /nonexistent/zreap-dir")) << f.what;
    EXPECT_EQ(lp.size(), 0u);
    EXPECT_EQ(reap_leftovers(), 0) << "the failed child must be reaped by spawn itself";
}

TEST_P(Spawn, StdinAndStdoutPipes) {
    auto lp = make();
    outcome r;
    auto o = helper({"echo"});
    o.stdin_mode = stdio::pipe;
    o.stdout_mode = stdio::pipe;
    zreap::child c = zreap::spawn(lp, o, r.on_exit());
    for (int fd : {c.stdin_fd(), c.stdout_fd()}) {
        ASSERT_GE(fd, 0);
        EXPECT_TRUE(::fcntl(fd, F_GETFL) & O_NONBLOCK);
        EXPECT_TRUE(::fcntl(fd, F_GETFD) & FD_CLOEXEC);
    }
    EXPECT_EQ(c.stderr_fd(), -1);
    capture(lp, c.stdout_fd(), r.out, r.out_eof);
    ASSERT_EQ(::write(c.stdin_fd(), "hello\n", 6), 6);
    c.close_stdin();
    EXPECT_EQ(c.stdin_fd(), -1);
    ASSERT_TRUE(run_until(lp, [&] { return r.exited && r.out_eof; }));
    EXPECT_EQ(r.out, "hello\n");
    EXPECT_EQ(r.status.exit_code(), 0);
}

TEST_P(Spawn, PipesAndNullAtLowNumbers) {
    // With fd 0 closed in the parent, /dev/null opened for the child's stdin gets fd 0; with
    // a pass_fds target at 60, the pipes spawn makes get numbers below it. Either way such
    // fds must first be moved out of the way of the child's dup2 calls (dup2(0, 0) would
    // not even clear close-on-exec), and the child gets exactly stdio and its pass_fds.
    for (bool high_target : {false, true}) {
        SCOPED_TRACE(high_target ? "pass_fds target 60" : "no pass_fds");
        auto lp = make();
        auto o = helper({"fds"});
        o.stdin_mode = stdio::null;
        o.stdout_mode = stdio::pipe;
        o.stderr_mode = stdio::pipe;
        int extra = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        ASSERT_GE(extra, 0);
        if (high_target)
            o.pass_fds = {{extra, 60}};
        int saved_stdin = ::fcntl(0, F_DUPFD_CLOEXEC, 3);
        ASSERT_GE(saved_stdin, 0);
        ::close(0);
        outcome r;
        std::string err;
        try {
            zreap::child c = zreap::spawn(lp, o, r.on_exit());
            ::dup2(saved_stdin, 0);
            capture(lp, c.stdout_fd(), r.out, r.out_eof);
            capture(lp, c.stderr_fd(), r.err, r.err_eof);
            EXPECT_TRUE(run_until(lp, [&] { return r.exited && r.out_eof && r.err_eof; }));
        } catch (const std::system_error& e) {
            ::dup2(saved_stdin, 0);
            err = e.what();
        }
        ::close(saved_stdin);
        ::close(extra);
        EXPECT_EQ(err, "");
        EXPECT_EQ(r.status.exit_code(), 0);
        std::set<std::string> want{"0", "1", "2"};
        if (high_target)
            want.insert("60");
        EXPECT_EQ(lines(r.out), want);
    }
}

TEST_P(Spawn, StderrPipe) {
    auto o = helper({"stderr", "oops"});
    o.stderr_mode = stdio::pipe;
    outcome r = run(o);
    EXPECT_EQ(r.err, "oops");
}

TEST_P(Spawn, NullStdin) {
    // echo with /dev/null as stdin sees EOF at once and writes nothing.
    auto o = helper({"echo"});
    o.stdin_mode = stdio::null;
    o.stdout_mode = stdio::pipe;
    outcome r = run(o);
    EXPECT_EQ(r.status.exit_code(), 0);
    EXPECT_EQ(r.out, "");
}

TEST_P(Spawn, NullStdout) {
    auto o = helper({"write", "1000"});
    o.stdout_mode = stdio::null;
    outcome r = run(o);
    EXPECT_EQ(r.status.exit_code(), 0) << "writing to /dev/null must succeed";
}

TEST_P(Spawn, GivenFdAsStdout) {
    std::string path = temp_file("", 0644);
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    auto o = helper({"cwd"});
    o.cwd = "/";
    o.stdout_mode = stdio::use_fd(fd);
    outcome r = run(o);
    EXPECT_EQ(r.status.exit_code(), 0);
    EXPECT_GE(::fcntl(fd, F_GETFD), 0) << "the caller keeps its fd";
    ::close(fd);
    std::ifstream in(path);
    std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ::unlink(path.c_str());
    EXPECT_EQ(got, "/\n");
}

TEST_P(Spawn, InheritedStdout) {
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    int saved = ::dup(1);
    ASSERT_GE(saved, 0);
    ::fflush(stdout);
    ::dup2(p[1], 1);  // for the duration of the spawn only: our stdout is the pipe
    auto lp = make();
    bool done = false;
    int code = -1;
    {
        zreap::child c = zreap::spawn(lp, helper({"cwd"}), [&](const exit_status& s) {
            done = true;
            code = s.exit_code();
        });
        ::dup2(saved, 1);
        ::close(saved);
        ::close(p[1]);
        EXPECT_TRUE(run_until(lp, [&] { return done; }));
    }
    char buf[4096];
    ssize_t n = ::read(p[0], buf, sizeof buf);
    ::close(p[0]);
    EXPECT_EQ(code, 0);
    ASSERT_GT(n, 0);
    EXPECT_EQ(std::string(buf, static_cast<std::size_t>(n)),
              std::filesystem::current_path().string() + "\n");
}

TEST_P(Spawn, InheritsEnvironment) {
    ::setenv("ZREAP_SPAWN_TEST", "inherited", 1);
    auto o = helper({"env", "ZREAP_SPAWN_TEST"});
    o.stdout_mode = stdio::pipe;
    outcome r = run(o);
    ::unsetenv("ZREAP_SPAWN_TEST");
    EXPECT_EQ(r.out, "inherited\n");
}

TEST_P(Spawn, ReplacesEnvironment) {
    ::setenv("ZREAP_SPAWN_TEST", "inherited", 1);
    auto o = helper({"env"});
    o.env_how = spawn_options::env_mode::replace;
    o.env = {"A=1", "B=two", "A=3"};
    o.stdout_mode = stdio::pipe;
    outcome r = run(o);
    ::unsetenv("ZREAP_SPAWN_TEST");
    EXPECT_EQ(lines(r.out), (std::set<std::string>{"A=3", "B=two"}));
}

TEST_P(Spawn, ExtendsEnvironment) {
    ::setenv("ZREAP_SPAWN_TEST", "inherited", 1);
    ::setenv("ZREAP_SPAWN_KEEP", "kept", 1);
    auto o = helper({"env"});
    o.env_how = spawn_options::env_mode::extend;
    o.env = {"ZREAP_SPAWN_TEST=changed", "ZREAP_SPAWN_NEW=new"};
    o.stdout_mode = stdio::pipe;
    outcome r = run(o);
    ::unsetenv("ZREAP_SPAWN_TEST");
    ::unsetenv("ZREAP_SPAWN_KEEP");
    auto env = lines(r.out);
    EXPECT_TRUE(env.count("ZREAP_SPAWN_TEST=changed"));
    EXPECT_FALSE(env.count("ZREAP_SPAWN_TEST=inherited"));
    EXPECT_TRUE(env.count("ZREAP_SPAWN_NEW=new"));
    EXPECT_TRUE(env.count("ZREAP_SPAWN_KEEP=kept"));
}

TEST_P(Spawn, SearchesTheChildsPath) {
    // The helper's folder is on the child's PATH only, so finding it proves which PATH
    // was searched; the empty first entries and a missing folder are skipped over.
    std::filesystem::path h(helper_path);
    spawn_options o;
    o.argv = {h.filename().string(), "env", "PATH"};
    o.env_how = spawn_options::env_mode::replace;
    o.env = {"PATH=/nonexistent/zreap:" + h.parent_path().string()};
    o.stdout_mode = stdio::pipe;
    outcome r = run(o);
    EXPECT_EQ(r.status.exit_code(), 0);
    EXPECT_EQ(r.out, o.env[0].substr(5) + "\n");
}

TEST_P(Spawn, WorkingDirectory) {
    auto o = helper({"cwd"});
    o.cwd = std::filesystem::canonical(std::filesystem::temp_directory_path()).string();
    o.stdout_mode = stdio::pipe;
    outcome r = run(o);
    EXPECT_EQ(r.out, o.cwd + "\n");
}

std::vector<long> ids_of(const std::string& out) {
    std::istringstream in(out);
    long pid = 0, pgid = 0, sid = 0;
    in >> pid >> pgid >> sid;
    return {pid, pgid, sid};
}

TEST_P(Spawn, ProcessGroupAndSession) {
    auto o = helper({"ids"});
    o.stdout_mode = stdio::pipe;

    auto same = ids_of(run(o).out);
    EXPECT_EQ(same[1], ::getpgrp());
    EXPECT_EQ(same[2], ::getsid(0));

    o.group = spawn_options::group_mode::new_group;
    auto group = ids_of(run(o).out);
    EXPECT_EQ(group[1], group[0]) << "leads its own process group";
    EXPECT_EQ(group[2], ::getsid(0)) << "in our session";

    o.group = spawn_options::group_mode::new_session;
    auto session = ids_of(run(o).out);
    EXPECT_EQ(session[1], session[0]);
    EXPECT_EQ(session[2], session[0]) << "leads its own session";
}

std::map<std::string, std::string> sigstatus(const std::string& out) {
    std::map<std::string, std::string> m;
    std::istringstream in(out);
    std::string key, value;
    while (in >> key >> value)
        m[key] = value;
    return m;
}

TEST_P(Spawn, ChildStartsWithCleanSignalState) {
    // The parent blocks, ignores and catches signals at spawn time; none of it may reach
    // the child.
    sigset_t block, old_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGRTMIN + 1);
    pthread_sigmask(SIG_BLOCK, &block, &old_mask);
    struct sigaction ign {
    }, catcher{}, old_usr2{}, old_pipe{}, old_hup{};
    ign.sa_handler = SIG_IGN;
    catcher.sa_handler = [](int) {};
    sigaction(SIGUSR2, &ign, &old_usr2);
    sigaction(SIGPIPE, &ign, &old_pipe);
    sigaction(SIGHUP, &catcher, &old_hup);

    auto lp = make();
    outcome r;
    auto o = helper({"sigstatus"});
    o.stdout_mode = stdio::pipe;
    zreap::child c = zreap::spawn(lp, o, r.on_exit());
    // Restored right after the spawn: the test checks what the child got at creation. Only
    // what the test blocked is unblocked: the loop may have blocked SIGCHLD itself (signalfd).
    pthread_sigmask(SIG_UNBLOCK, &block, nullptr);
    sigaction(SIGUSR2, &old_usr2, nullptr);
    sigaction(SIGPIPE, &old_pipe, nullptr);
    sigaction(SIGHUP, &old_hup, nullptr);
    capture(lp, c.stdout_fd(), r.out, r.out_eof);
    ASSERT_TRUE(run_until(lp, [&] { return r.exited && r.out_eof; }));

    auto st = sigstatus(r.out);
    EXPECT_EQ(st["SigBlk:"], "0000000000000000");
    EXPECT_EQ(st["SigIgn:"], "0000000000000000");
    EXPECT_EQ(st["SigCgt:"], "0000000000000000");
}

TEST_P(Spawn, ChildInheritsNoStrayFds) {
    // Not close-on-exec, and at a high number: the child must still not see them.
    int plain = ::open("/dev/null", O_RDONLY);
    ASSERT_GE(plain, 0);
    int high = ::fcntl(plain, F_DUPFD, 200);
    ASSERT_GE(high, 200);
    int passed = ::open("/dev/null", O_RDONLY | O_CLOEXEC);

    auto o = helper({"fds"});
    o.stdout_mode = stdio::pipe;
    outcome r = run(o);
    EXPECT_EQ(lines(r.out), (std::set<std::string>{"0", "1", "2"}));

    o.pass_fds = {{passed, 5}, {plain, 9}};
    r = run(o);
    EXPECT_EQ(lines(r.out), (std::set<std::string>{"0", "1", "2", "5", "9"}));
    ::close(plain);
    ::close(high);
    ::close(passed);
}

TEST_P(Spawn, ParentWithoutStdinStillWiresTheChildsStdout) {
    // A daemon with fd 0 closed: a pipe spawn makes for itself then gets fd 0 and the first
    // free number above the child's fds (err_at), so the first fd prepared for the child
    // lands on err_at once that pipe end has moved on. The child must still get it as
    // its stdout, not the error pipe in its place.
    int out[2];
    ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
    auto lp = make();
    int saved_stdin = ::fcntl(0, F_DUPFD_CLOEXEC, 3);
    ASSERT_GE(saved_stdin, 0);
    ::close(0);
    // err_at is the lowest free number above 2: one past the highest pass_fds target.
    int first_free = ::fcntl(2, F_DUPFD_CLOEXEC, 3);
    ::close(first_free);
    auto o = helper({"cwd"});
    o.cwd = "/";
    o.stdout_mode = stdio::use_fd(out[1]);
    if (first_free > 3)
        o.pass_fds = {{out[1], first_free - 1}};
    bool done = false;
    int code = -1;
    std::string err;
    try {
        zreap::child c = zreap::spawn(lp, o, [&](const exit_status& s) {
            done = true;
            code = s.exit_code();
        });
        ::close(out[1]);
        out[1] = -1;
        EXPECT_TRUE(run_until(lp, [&] { return done; }));
    } catch (const std::system_error& e) {
        err = e.what();
    }
    ::dup2(saved_stdin, 0);
    ::close(saved_stdin);
    if (out[1] >= 0)
        ::close(out[1]);
    EXPECT_EQ(err, "");
    EXPECT_EQ(code, 0);
    char buf[64];
    ssize_t n = ::read(out[0], buf, sizeof buf);
    ::close(out[0]);
    EXPECT_EQ(std::string(buf, static_cast<std::size_t>(std::max<ssize_t>(n, 0))), "/\n");
}

TEST_P(Spawn, PassFdsMayTargetEachOthersNumbers) {
    // {a -> b's number, b -> a's number}: a naive dup2 sequence would overwrite b's fd
    // before moving it. The child writes to the fd numbered like b's write end, which must
    // now be a's.
    int a[2], b[2];
    ASSERT_EQ(::pipe2(a, O_CLOEXEC), 0);
    ASSERT_EQ(::pipe2(b, O_CLOEXEC), 0);
    auto o = helper({"write-fd", std::to_string(b[1]), "to-a"});
    o.pass_fds = {{a[1], b[1]}, {b[1], a[1]}};
    outcome r = run(o);
    ::close(a[1]);
    ::close(b[1]);
    EXPECT_EQ(r.status.exit_code(), 0);
    char buf[16];
    ssize_t n = ::read(a[0], buf, sizeof buf);
    EXPECT_EQ(std::string(buf, static_cast<std::size_t>(std::max<ssize_t>(n, 0))), "to-a");
    EXPECT_EQ(::read(b[0], buf, sizeof buf), 0) << "nothing went to b";
    ::close(a[0]);
    ::close(b[0]);
}

TEST_P(Spawn, KillSignalsTheChild) {
    auto lp = make();
    outcome r;
    auto o = helper({"echo"});
    o.stdin_mode = stdio::pipe;  // blocks on stdin until killed
    zreap::child c = zreap::spawn(lp, o, r.on_exit());
    c.kill(SIGKILL);
    ASSERT_TRUE(run_until(lp, [&] { return r.exited; }));
    EXPECT_TRUE(r.status.signaled());
    EXPECT_EQ(r.status.term_signal(), SIGKILL);
}

TEST_P(Spawn, KillAfterReapThrowsEsrch) {
    auto lp = make();
    bool done = false;
    int err_in_callback = 0;
    zreap::child c = zreap::spawn(lp, helper({"exit", "0"}), [&](const exit_status&) {
        done = true;
        err_in_callback = errno_of([&] { c.kill(SIGTERM); });
    });
    EXPECT_FALSE(c.reaped());
    ASSERT_TRUE(run_until(lp, [&] { return done; }));
    EXPECT_TRUE(c.reaped());
    EXPECT_EQ(err_in_callback, ESRCH) << "already reaped while its callback runs";
    EXPECT_EQ(errno_of([&] { c.kill(SIGTERM); }), ESRCH);
    EXPECT_EQ(errno_of([&] { c.kill(0); }), ESRCH);
    c.terminate(10ms);  // does nothing once reaped
    EXPECT_EQ(lp.size(), 0u);
}

TEST_P(Spawn, TerminateEscalatesToSigkillAfterGrace) {
    auto lp = make();
    outcome r;
    auto o = helper({"ignore-term"});
    o.stdout_mode = stdio::pipe;
    zreap::child c = zreap::spawn(lp, o, r.on_exit());
    capture(lp, c.stdout_fd(), r.out, r.out_eof);
    ASSERT_TRUE(run_until(lp, [&] { return r.out == "ready\n"; }));
    const auto grace = 200ms;
    auto t0 = clock_type::now();
    c.terminate(grace);  // returns at once: the SIGKILL comes from the loop's timer
    EXPECT_LT(clock_type::now() - t0, grace);
    ASSERT_TRUE(run_until(lp, [&] { return r.exited; }));
    EXPECT_GE(clock_type::now() - t0, grace) << "SIGKILL came before the grace period ended";
    EXPECT_TRUE(r.status.signaled());
    EXPECT_EQ(r.status.term_signal(), SIGKILL);
}

TEST_P(Spawn, TerminateRemovesItsTimerWhenTheChildExits) {
    auto lp = make();
    outcome r;
    auto o = helper({"echo"});
    o.stdin_mode = stdio::pipe;
    zreap::child c = zreap::spawn(lp, o, r.on_exit());
    c.terminate(std::chrono::hours(1));
    ASSERT_TRUE(run_until(lp, [&] { return r.exited; }));
    EXPECT_EQ(r.status.term_signal(), SIGTERM);
    EXPECT_EQ(lp.size(), 0u) << "the SIGKILL timer must go with the child";
}

TEST_P(Spawn, KillGroupSignalsTheWholeGroup) {
    auto lp = make();
    outcome r;
    auto o = helper({"tree"});  // prints its grandchild's pid, both pause
    o.stdout_mode = stdio::pipe;
    o.group = spawn_options::group_mode::new_group;
    zreap::child c = zreap::spawn(lp, o, r.on_exit());
    EXPECT_TRUE(c.leads_group());
    capture(lp, c.stdout_fd(), r.out, r.out_eof);
    ASSERT_TRUE(run_until(lp, [&] { return r.out.find('\n') != std::string::npos; }));
    const pid_t grandchild = std::atoi(r.out.c_str());
    ASSERT_GT(grandchild, 0);
    c.kill_group(SIGTERM);
    ASSERT_TRUE(run_until(lp, [&] { return r.exited; }));
    EXPECT_EQ(r.status.term_signal(), SIGTERM);
    EXPECT_TRUE(gone_within(grandchild, 10s)) << "the grandchild survived kill_group";
    EXPECT_EQ(errno_of([&] { c.kill_group(SIGTERM); }), ESRCH) << "never after the reap";
}

TEST_P(Spawn, KillGroupNeedsAGroupOfItsOwn) {
    auto lp = make();
    outcome r;
    zreap::child c = zreap::spawn(lp, helper({"pause"}), r.on_exit());
    EXPECT_FALSE(c.leads_group());
    EXPECT_EQ(errno_of([&] { c.kill_group(SIGTERM); }), EINVAL);
    c.kill(SIGKILL);
    ASSERT_TRUE(run_until(lp, [&] { return r.exited; }));
}

// terminate() of a child that leads a group ends the group: a job's own children go too
// (`sh -c 'sleep 3141; echo never'`, cancelled).
TEST_P(Spawn, TerminateEndsTheChildsGroup) {
    auto lp = make();
    outcome r;
    auto o = helper({"tree"});
    o.stdout_mode = stdio::pipe;
    o.group = spawn_options::group_mode::new_session;
    zreap::child c = zreap::spawn(lp, o, r.on_exit());
    capture(lp, c.stdout_fd(), r.out, r.out_eof);
    ASSERT_TRUE(run_until(lp, [&] { return r.out.find('\n') != std::string::npos; }));
    const pid_t grandchild = std::atoi(r.out.c_str());
    c.terminate(std::chrono::hours(1));
    // EOF on stdout: the grandchild, which held the pipe too, is gone.
    ASSERT_TRUE(run_until(lp, [&] { return r.exited && r.out_eof; }))
        << "the grandchild survived terminate()";
    EXPECT_EQ(r.status.term_signal(), SIGTERM);
    EXPECT_TRUE(gone_within(grandchild, 10s)) << "the grandchild survived terminate()";
    EXPECT_EQ(lp.size(), 0u) << "the SIGKILL timer must go with the child";
}

TEST_P(Spawn, StderrToStdoutSharesThePipeAndArrivesBeforeTheExit) {
    auto o = helper({"interleave"});
    o.stdout_mode = stdio::pipe;
    o.stderr_to_stdout = true;
    outcome r = run(o);
    EXPECT_EQ(r.status.exit_code(), 0);
    EXPECT_EQ(r.out, "out1 err1 out2");
    EXPECT_EQ(r.out_at_exit, r.out.size());
    EXPECT_TRUE(r.err.empty());
}

TEST_P(Spawn, ContradictoryOptionsAreRefused) {
    auto lp = make();
    auto o = helper({"exit", "0"});
    o.stderr_to_stdout = true;
    o.stderr_mode = stdio::pipe;
    EXPECT_EQ(errno_of([&] { (void)zreap::spawn(lp, o, [](const exit_status&) {}); }), EINVAL);
    auto e = helper({"exit", "0"});
    e.env = {"ZREAP_X=1"};  // env_how left at inherit: refused, not ignored
    EXPECT_EQ(errno_of([&] { (void)zreap::spawn(lp, e, [](const exit_status&) {}); }), EINVAL);
    e.parent_death_signal = -1;
    e.env_how = spawn_options::env_mode::extend;
    EXPECT_EQ(errno_of([&] { (void)zreap::spawn(lp, e, [](const exit_status&) {}); }), EINVAL);
    EXPECT_EQ(lp.size(), 0u);
}

#if defined(__linux__)
// The child dies with its parent: an intermediate process (made a subreaper's child here,
// so that the test can wait for the orphan) spawns a child with parent_death_signal and
// dies with SIGKILL; the child gets the signal. Without the option the child lives on.
TEST_P(Spawn, ParentDeathSignalEndsTheChildWithItsParent) {
    const backend b = GetParam();
    for (int sig : {SIGKILL, 0}) {
        SCOPED_TRACE(sig);
        std::string failure = in_forked_child([b, sig]() -> std::string {
            CHILD_CHECK(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
            int report[2];
            CHILD_CHECK(::pipe2(report, O_CLOEXEC) == 0);
            pid_t parent = ::fork();
            CHILD_CHECK(parent >= 0);
            if (parent == 0) {
                ::close(report[0]);
                zreap::loop lp(b);
                auto o = helper({"pause"});
                o.parent_death_signal = sig;
                zreap::child c = zreap::spawn(lp, o, [](const exit_status&) {});
                pid_t pid = c.pid();
                ssize_t w = ::write(report[1], &pid, sizeof pid);
                (void)w;
                ::kill(::getpid(), SIGKILL);  // dies at once, without a destructor
            }
            ::close(report[1]);
            pid_t orphan = 0;
            ssize_t n = ::read(report[0], &orphan, sizeof orphan);
            ::close(report[0]);
            CHILD_CHECK(n == sizeof orphan);
            int st = 0;
            CHILD_CHECK(::waitpid(parent, &st, 0) == parent);
            // The orphan is ours now (subreaper).
            if (sig == 0) {
                pid_t w;
                for (int i = 0; i < 50 && (w = ::waitpid(orphan, &st, WNOHANG)) == 0; ++i)
                    ::usleep(2000);
                CHILD_CHECK(::waitpid(orphan, &st, WNOHANG) == 0);  // still running
                ::kill(orphan, SIGKILL);
                CHILD_CHECK(::waitpid(orphan, &st, 0) == orphan);
                return "";
            }
            CHILD_CHECK(::waitpid(orphan, &st, 0) == orphan);
            CHILD_CHECK(WIFSIGNALED(st) && WTERMSIG(st) == sig);
            return "";
        });
        EXPECT_EQ(failure, "");
    }
}
#endif

TEST_P(Spawn, AllOutputArrivesBeforeTheExitCallback) {
    const std::size_t total = 1 << 20;
    auto o = helper({"write", std::to_string(total)});
    o.stdout_mode = stdio::pipe;
    outcome r = run(o, 4096);
    EXPECT_EQ(r.status.exit_code(), 0);
    EXPECT_EQ(r.out.size(), total);
    EXPECT_EQ(r.out_at_exit, total) << "the exit callback ran before all output was read";
}

TEST_P(Spawn, RespawnFromExitCallback) {
    auto lp = make();
    const int generations = 20;
    std::vector<int> codes;
    std::vector<zreap::child> kids;
    std::function<void(int)> start = [&](int gen) {
        kids.push_back(
            zreap::spawn(lp, helper({"exit", std::to_string(gen)}), [&, gen](const exit_status& s) {
                codes.push_back(s.exit_code());
                if (gen + 1 < generations)
                    start(gen + 1);
            }));
    };
    start(0);
    ASSERT_TRUE(run_until(lp, [&] { return codes.size() == generations; }));
    for (int i = 0; i < generations; ++i)
        EXPECT_EQ(codes[i], i);
    EXPECT_EQ(lp.size(), 0u);
}

TEST_P(Spawn, ManyConcurrentSpawnsEachReportedOnce) {
    // With pidfds every live child costs two fds (ours and the loop's): make room.
    struct rlimit old_lim {};
    ::getrlimit(RLIMIT_NOFILE, &old_lim);
    struct rlimit lim = old_lim;
    lim.rlim_cur = std::min<rlim_t>(std::max<rlim_t>(lim.rlim_cur, 4096), lim.rlim_max);
    ::setrlimit(RLIMIT_NOFILE, &lim);

    auto lp = make();
    const int n = 500;
    std::map<pid_t, int> reports;
    std::vector<zreap::child> kids;
    spawn_options o;
    o.argv = {"true"};  // found on PATH
    for (int i = 0; i < n; ++i)
        kids.push_back(zreap::spawn(lp, o, [&](const exit_status& s) {
            EXPECT_EQ(s.exit_code(), 0);
            ++reports[s.pid];
        }));
    ASSERT_TRUE(run_until(
        lp, [&] { return reports.size() == n; }, 60s));
    lp.run_once(0ms);
    for (auto& k : kids)
        EXPECT_EQ(reports[k.pid()], 1) << k.pid();
    kids.clear();
    ::setrlimit(RLIMIT_NOFILE, &old_lim);
}

TEST_P(Spawn, DestroyingTheChildObjectStillReportsTheExit) {
    auto lp = make();
    bool done = false;
    {
        auto o = helper({"write", "10"});
        o.stdout_mode = stdio::pipe;
        (void)zreap::spawn(lp, o, [&](const exit_status&) { done = true; });
    }
    ASSERT_TRUE(run_until(lp, [&] { return done; }));
}

#if ZREAP_TEST_SECCOMP
// A kernel or a container whose seccomp filter refuses clone(CLONE_PIDFD): spawn falls back
// to the portable path (and the pidfd backend to pidfd_open) instead of failing. Exec
// failures then come back through the error pipe, as exceptions just the same, and the
// stdio wiring is the same. Run in a death-test child, since a seccomp filter cannot be
// removed again; each failed check exits with its own code.
TEST_P(Spawn, FallsBackWhenClonePidfdIsRefused) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    const backend b = GetParam();
    EXPECT_EXIT(
        {
            // glibc's clone() passes the flags as the system call's first argument.
            if (!install_seccomp([](scmp_filter_ctx ctx) {
                     return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone), 1,
                                             SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_PIDFD, CLONE_PIDFD));
                 }).empty())
                std::_Exit(10);
            zreap::loop lp(b);
            int code = -1;
            zreap::child c = zreap::spawn(lp, helper({"exit", "7"}),
                                          [&](const exit_status& s) { code = s.exit_code(); });
            if (c.pidfd() != -1)
                std::_Exit(11);
            if (!run_until(lp, [&] { return code >= 0; }))
                std::_Exit(12);
            if (code != 7)
                std::_Exit(13);

            const std::set<int> fds = open_fds();
            spawn_options missing;
            missing.argv = {"/nonexistent/zreap-no-such-program"};
            failure f =
                failure_of([&] { (void)zreap::spawn(lp, missing, [](const exit_status&) {}); });
            if (f.err != ENOENT || !f.says("execve"))
                std::_Exit(14);
            auto no_cwd = helper({"exit", "0"});
            no_cwd.cwd = "/nonexistent/zreap-dir";
            f = failure_of([&] { (void)zreap::spawn(lp, no_cwd, [](const exit_status&) {}); });
            if (f.err != ENOENT || !f.says("chdir to /nonexistent/zreap-dir"))
                std::_Exit(15);
            if (reap_leftovers() != 0)
                std::_Exit(16);
            if (open_fds() != fds)
                std::_Exit(17);
            if (lp.size() != 0)
                std::_Exit(18);

            auto cwd = helper({"cwd"});
            cwd.cwd = "/";
            cwd.stdout_mode = stdio::pipe;
            // On the same loop: signalfd and libev allow one per process.
            outcome r;
            zreap::child k = zreap::spawn(lp, cwd, r.on_exit());
            capture(lp, k.stdout_fd(), r.out, r.out_eof);
            if (!run_until(lp, [&] { return r.exited && r.out_eof; }) ||
                r.status.exit_code() != 0 || r.out != "/\n")
                std::_Exit(19);
            std::_Exit(0);
        },
        ::testing::ExitedWithCode(0), "");
}
#endif

}  // namespace

INSTANTIATE_TEST_SUITE_P(Backends, Spawn, ::testing::ValuesIn(zreap::compiled_backends()),
                         backend_param_name);
