// zreap::spawn: prepares everything in the parent, creates the child (clone with
// CLONE_PIDFD for the pidfd backend, vfork elsewhere), learns of a failure before exec
// (through the memory it shares with a clone child, else a close-on-exec pipe), and
// registers the child with the loop before returning.
//
// Why not posix_spawn: it cannot close every inherited fd portably (addclosefrom_np is
// glibc >= 2.34 only), cannot hand back a pidfd, and PATH search with the child's own PATH
// would mean one failed spawn per PATH entry. The vfork path below does what glibc's
// posix_spawn does internally (all signals blocked around the creation, dispositions reset
// in the child before anything else), so it costs the same.

#include <zreap/spawn.hpp>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

#include "child_state.hpp"
#include "error.hpp"
#include "fd_limit.hpp"
#include "loop_access.hpp"
#include "pipe.hpp"
#include "spawn_child.hpp"
#include "unique_fd.hpp"
#include "zreap_config.h"

extern char** environ;

namespace zreap {

using detail::make_cloexec_pipe;
using detail::pipe_pair;
using detail::spawn_plan;
using detail::spawn_stage;
using detail::throw_errno;
using detail::unique_fd;

// ---- the child side -----------------------------------------------------------------------

namespace detail {

namespace {

// To the error pipe @p fd, or with fd -1 into the parent's memory (plan.report).
[[noreturn]] ZREAP_CHILD_CODE void report_and_exit(const spawn_plan& p, int fd, spawn_stage stage,
                                                   int err) noexcept {
    if (fd < 0) {
        // CLONE_VM | CLONE_VFORK: the parent is suspended until the _exit below and reads
        // this when clone returns. volatile because the C++ abstract machine does not know
        // that another process reads these stores: to the compiler they are followed only
        // by _exit, which never returns, and it must neither drop them as dead nor sink them
        // past it. (The parent reads through volatile too, for the same reason.)
        volatile spawn_failure* r = p.report;
        r->err = err;
        r->stage = static_cast<int>(stage);
    } else {
        spawn_failure f{static_cast<int>(stage), err};
        while (::write(fd, &f, sizeof f) < 0 && errno == EINTR) {
        }
    }
    ::_exit(127);
}

ZREAP_CHILD_CODE int dup2_retry(int from, int to) noexcept {
    int rc;
    while ((rc = ::dup2(from, to)) < 0 && errno == EINTR) {
    }
    return rc;
}

// The errors after which execvp tries the next PATH entry; anything else is final.
ZREAP_CHILD_CODE bool try_next_path(int err) noexcept {
    return err == ENOENT || err == ENOTDIR || err == EACCES || err == ESTALE || err == ENODEV ||
           err == ETIMEDOUT || err == ELOOP || err == ENAMETOOLONG;
}

}  // namespace

ZREAP_CHILD_CODE void spawn_child_main(const spawn_plan& p) noexcept {
    // First of all: no handler of the parent's may run in here (with CLONE_VM or vfork it
    // would run on the parent's memory). The parent has every signal blocked; the child
    // resets every disposition, SIG_IGN included since that survives execve, and only then
    // unblocks. glibc refuses its two internal signals with EINVAL, which is harmless:
    // they have handlers, and execve resets handlers to the default.
    struct sigaction dfl;
    std::memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int s = 1; s < p.signal_limit; ++s)
        if (s != SIGKILL && s != SIGSTOP)
            ::sigaction(s, &dfl, nullptr);

    // The moves first: every source is >= err_at and every target below it, and so is the
    // error pipe, so none of them overwrites anything still needed. Only then the error pipe
    // goes to err_at, where a source may sit (the parent cannot keep that number free: a
    // pipe end of its own may have held it until the sources were made, and without a pipe
    // nothing holds it). err is -1 when the report goes to shared memory.
    int err = p.err_fd;
    for (std::size_t i = 0; i < p.nmoves; ++i)
        if (dup2_retry(p.move_from[i], p.move_to[i]) < 0)
            report_and_exit(p, err, spawn_stage::dup2, errno);
    if (p.stderr_to_stdout && dup2_retry(1, 2) < 0)
        report_and_exit(p, err, spawn_stage::dup2, errno);
    if (err >= 0 && err != p.err_at) {
        if (dup2_retry(err, p.err_at) < 0)
            report_and_exit(p, err, spawn_stage::dup2, errno);
        err = p.err_at;
        ::fcntl(err, F_SETFD, FD_CLOEXEC);
    }
    // Nothing else of the parent's survives, whatever its close-on-exec flag says: every fd
    // from err_at up goes, but for the error pipe, which is at err_at if there is one.
    for (std::size_t i = 0; i < p.nclose_low; ++i)
        ::close(p.close_low[i]);
    const int first_closed = err >= 0 ? err + 1 : p.err_at;
#if ZREAP_HAVE_CLOSEFROM
    ::closefrom(first_closed);
#else
    for (int fd = first_closed; fd < p.close_limit; ++fd)
        ::close(fd);
#endif

    if (p.group == spawn_plan::group_mode::new_session) {
        if (::setsid() < 0)
            report_and_exit(p, err, spawn_stage::setsid, errno);
    } else if (p.group == spawn_plan::group_mode::new_group) {
        if (::setpgid(0, 0) < 0)
            report_and_exit(p, err, spawn_stage::setpgid, errno);
    }
    if (p.cwd && ::chdir(p.cwd) < 0)
        report_and_exit(p, err, spawn_stage::chdir, errno);

    if (p.restore_nofile) {
        struct rlimit rl;
        rl.rlim_cur = p.nofile_soft;
        rl.rlim_max = p.nofile_hard;
        if (::setrlimit(RLIMIT_NOFILE, &rl) != 0)
            report_and_exit(p, err, spawn_stage::setrlimit, errno);
    }

    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);

#if ZREAP_HAVE_PDEATHSIG
    if (p.parent_death_signal != 0) {
        if (int e = set_parent_death_signal(p.parent_death_signal, p.parent_pid); e != 0)
            report_and_exit(p, err, spawn_stage::parent_death_signal, e);
    }
#endif

    // execvp's rules, minus its /bin/sh retry on ENOEXEC: EACCES from any entry wins over
    // a later ENOENT, so a non-executable file on PATH is reported as such.
    bool saw_eacces = false;
    int last = ENOENT;
    for (std::size_t i = 0; i < p.npaths; ++i) {
        ::execve(p.paths[i], p.argv, p.envp);
        last = errno;
        if (last == EACCES)
            saw_eacces = true;
        if (!try_next_path(last))
            break;
    }
    if (saw_eacces && try_next_path(last))
        last = EACCES;
    report_and_exit(p, err, spawn_stage::exec, last);
}

}  // namespace detail

// ---- the parent side ----------------------------------------------------------------------

namespace {

const char* stage_name(int stage) noexcept {
    switch (static_cast<spawn_stage>(stage)) {
        case spawn_stage::dup2:
            return "dup2 in the child";
        case spawn_stage::setsid:
            return "setsid";
        case spawn_stage::setpgid:
            return "setpgid";
        case spawn_stage::chdir:
            return "chdir";
        case spawn_stage::exec:
            return "execve";
        case spawn_stage::parent_death_signal:
            return "setting the parent-death signal (prctl PR_SET_PDEATHSIG)";
        case spawn_stage::setrlimit:
            return "restoring RLIMIT_NOFILE";
    }
    return "child setup";
}

std::string env_name(const char* entry) {
    const char* eq = std::strchr(entry, '=');
    return eq ? std::string(entry, static_cast<std::size_t>(eq - entry)) : std::string(entry);
}

unique_fd dup_above(int fd, int min, const std::string& what) {
    unique_fd d(::fcntl(fd, F_DUPFD_CLOEXEC, min));
    if (!d)
        throw_errno(what);
    return d;
}

// The error pipe of the portable path, its write end at a number >= err_at (never a move
// target, so the child's moves cannot overwrite it).
//
// With vfork the child has exec'd or exited when vfork returns, so a report, if any, is
// already in the pipe: the read end is non-blocking, and waiting for EOF instead could hang
// while a fork() made by other code in another thread still holds a copy of the write end
// (close-on-exec only takes effect at that child's exec). The write end is then
// non-blocking as well, which is harmless: the child writes 8 bytes once into an empty
// pipe. With plain fork the parent must wait for the child's exec: blocking, read to EOF.
pipe_pair make_error_pipe(int err_at, const std::string& what) {
    pipe_pair p = make_cloexec_pipe(ZREAP_HAVE_VFORK != 0, what);
    if (p.write.get() < err_at)
        p.write = dup_above(p.write.get(), err_at, what + ": fcntl(F_DUPFD_CLOEXEC)");
    return p;
}

// vfork where there is one: no page-table copy, so a spawn costs the same whatever the
// parent's size. Kept out of line with nothing live across the call but its argument.
ZREAP_CHILD_CODE __attribute__((noinline)) pid_t create_portable(const spawn_plan* plan) noexcept {
#if ZREAP_HAVE_VFORK
    pid_t pid = ::vfork();
#else
    pid_t pid = ::fork();
#endif
    if (pid == 0)
        detail::spawn_child_main(*plan);
    return pid;
}

void reap_blocking(pid_t pid) noexcept {
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
}

}  // namespace

int child::state::send_unchecked(int sig, bool group) noexcept {
    if (group)
        return ::kill(-pid, sig) == 0 ? 0 : errno;
#if ZREAP_HAVE_CLONE_PIDFD
    if (pidfd)
        return detail::send_signal_pidfd(pidfd.get(), sig) == 0 ? 0 : errno;
#endif
    // Without a pidfd the pid is still safe to use: the loop has not reaped it, so it is
    // ours (running or a zombie) and cannot have been recycled.
    return ::kill(pid, sig) == 0 ? 0 : errno;
}

void child::state::send(int sig, bool group, const char* call) {
    auto what = [&] {
        return std::string("zreap::child::") + call + "(" + std::to_string(pid) + ", " +
               std::to_string(sig) + ")";
    };
    // Reaped means the pid may belong to someone else by now: never signal it. The loop
    // sets this when it reaps, before the exit callback, which may be held back.
    if (reaped)
        throw_errno(ESRCH, what() + ": the child has been reaped");
    // With its loop gone nothing reaps or tracks the child any more: other code may have
    // reaped it, and its pid may be recycled.
    if (lp.expired())
        throw std::logic_error(what() + ": the loop that watched the child is gone");
    // Removed from the loop: other code may have reaped it, and the pid may be recycled.
    if (released)
        throw std::logic_error(what() + ": the child was removed from its loop (remove())");
    if (group && !leads_group)
        throw_errno(EINVAL, what() +
                                ": the child does not lead a process group of its own "
                                "(spawn it with group_mode::new_group or new_session)");
    if (int e = send_unchecked(sig, group); e != 0)
        throw_errno(e, what() + (group   ? ": kill(-pgid)"
                                 : pidfd ? ": pidfd_send_signal"
                                         : ": kill"));
}

child::child() noexcept = default;
child::child(std::shared_ptr<state> s) noexcept : s_(std::move(s)) {}
child::~child() {
    // The pidfd stays with the state: a pending terminate() may still need it.
    if (s_) {
        s_->in.reset();
        s_->out.reset();
        s_->err.reset();
    }
}
child::child(child&&) noexcept = default;
child& child::operator=(child&& o) noexcept {
    if (this != &o) {
        child gone(std::move(*this));
        s_ = std::move(o.s_);
    }
    return *this;
}

pid_t child::pid() const noexcept {
    return s_ ? s_->pid : -1;
}
int child::pidfd() const noexcept {
    return s_ ? s_->pidfd.get() : -1;
}
int child::stdin_fd() const noexcept {
    return s_ ? s_->in.get() : -1;
}
int child::stdout_fd() const noexcept {
    return s_ ? s_->out.get() : -1;
}
int child::stderr_fd() const noexcept {
    return s_ ? s_->err.get() : -1;
}
int child::release_stdin() noexcept {
    return s_ ? s_->in.release() : -1;
}
int child::release_stdout() noexcept {
    return s_ ? s_->out.release() : -1;
}
int child::release_stderr() noexcept {
    return s_ ? s_->err.release() : -1;
}
void child::close_stdin() noexcept {
    if (s_)
        s_->in.reset();
}
source_id child::source() const noexcept {
    return s_ ? s_->src : 0;
}
bool child::reaped() const noexcept {
    return s_ && s_->reaped;
}

bool child::leads_group() const noexcept {
    return s_ && s_->leads_group;
}

void child::kill(int sig) {
    if (!s_)
        throw_errno(ESRCH, "zreap::child::kill: empty child object");
    s_->send(sig, false, "kill");
}

void child::kill_group(int sig) {
    if (!s_)
        throw_errno(ESRCH, "zreap::child::kill_group: empty child object");
    s_->send(sig, true, "kill_group");
}

void child::terminate(std::chrono::milliseconds grace) {
    if (!s_ || s_->reaped)
        return;
    std::shared_ptr<loop::impl> lp = s_->lp.lock();
    if (!lp)
        throw std::logic_error("zreap::child::terminate(" + std::to_string(s_->pid) +
                               "): the loop that watched the child is gone");
    s_->send(SIGTERM, s_->leads_group, "terminate");
    if (s_->term_timer)
        detail::remove(*lp, s_->term_timer);
    // The timer holds the state, so the SIGKILL still comes if the child object is gone.
    // The loop removes the timer the moment it reaps the child, so it never fires after.
    std::shared_ptr<state> st = s_;
    s_->term_timer = detail::add_timer(*lp, grace, std::chrono::milliseconds(0), [st] {
        st->term_timer = 0;
        if (!st->reaped && !st->released)
            st->send_unchecked(SIGKILL, st->leads_group);
    });
}

namespace {
// Everything spawn() does; returns the new child's state.
std::shared_ptr<child::state> spawn_once(loop& lp, const spawn_options& o,
                                         std::function<void(const exit_status&)> on_exit);
}  // namespace

child spawn(loop& lp, const spawn_options& o, std::function<void(const exit_status&)> on_exit) {
    // Nothing is left behind when spawn_once throws, so it can be tried again once the fd
    // limit is raised (one pidfd per child with the pidfd backend, plus the pipes).
    return child(detail::retry_after_raising_fd_limit(
        detail::loop_raises_fd_limit(*detail::loop_access::state(lp)),
        [&] { return spawn_once(lp, o, on_exit); }));
}

namespace {

std::shared_ptr<child::state> spawn_once(loop& lp, const spawn_options& o,
                                         std::function<void(const exit_status&)> on_exit) {
    std::string what = "zreap::spawn(" + (o.argv.empty() ? std::string() : o.argv[0]) + ")";
    if (o.argv.empty())
        throw_errno(EINVAL, what + ": empty argv");
    if (o.argv[0].empty())
        throw_errno(ENOENT, what + ": empty program name");

    // argv and envp: pointers into strings that outlive the child's exec.
    std::vector<char*> argv;
    argv.reserve(o.argv.size() + 1);
    for (const std::string& a : o.argv)
        argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);

    if (o.env_how == spawn_options::env_mode::inherit && !o.env.empty())
        throw_errno(EINVAL, what +
                                ": env has entries but env_how is inherit; set env_how to "
                                "extend or replace");
    for (const std::string& e : o.env)
        if (e.find('=') == std::string::npos)
            throw_errno(EINVAL, what + ": environment entry without '=': " + e);
    if (o.stderr_to_stdout && o.stderr_mode.how != stdio::kind::inherit)
        throw_errno(EINVAL, what + ": stderr_to_stdout and a stderr_mode other than inherit");
#if !ZREAP_HAVE_PDEATHSIG
    if (o.parent_death_signal != 0)
        throw_errno(ENOTSUP, what + ": parent_death_signal needs Linux (prctl PR_SET_PDEATHSIG)");
#endif
    if (o.parent_death_signal < 0 || o.parent_death_signal >= 65)
        throw_errno(EINVAL, what + ": parent_death_signal " +
                                std::to_string(o.parent_death_signal) + " is not a signal");
    std::vector<char*> envp_store;
    char* const* envp = environ;
    if (o.env_how != spawn_options::env_mode::inherit) {
        // A later entry of `env` replaces an earlier one of the same name.
        std::vector<std::string> names;
        for (const std::string& e : o.env)
            names.push_back(env_name(e.c_str()));
        auto overridden_later = [&](std::size_t i) {
            for (std::size_t j = i + 1; j < names.size(); ++j)
                if (names[j] == names[i])
                    return true;
            return false;
        };
        if (o.env_how == spawn_options::env_mode::extend && environ) {
            for (char** e = environ; *e; ++e)
                if (std::find(names.begin(), names.end(), env_name(*e)) == names.end())
                    envp_store.push_back(*e);
        }
        for (std::size_t i = 0; i < o.env.size(); ++i)
            if (!overridden_later(i))
                envp_store.push_back(const_cast<char*>(o.env[i].c_str()));
        envp_store.push_back(nullptr);
        envp = envp_store.data();
    }

    // PATH search with the child's PATH, resolved here so that the child only calls execve.
    std::vector<std::string> paths;
    const std::string& prog = o.argv[0];
    if (prog.find('/') != std::string::npos) {
        paths.push_back(prog);
    } else {
        const char* path = nullptr;
        for (char* const* e = envp; e && *e; ++e)
            if (std::strncmp(*e, "PATH=", 5) == 0) {
                path = *e + 5;
                break;
            }
        std::string dirs = path ? path : "/bin:/usr/bin";  // execvp's default
        std::size_t start = 0;
        for (;;) {
            std::size_t colon = dirs.find(':', start);
            std::string dir =
                dirs.substr(start, colon == std::string::npos ? colon : colon - start);
            paths.push_back(dir.empty() ? prog : dir + "/" + prog);  // empty entry: the cwd
            if (colon == std::string::npos)
                break;
            start = colon + 1;
        }
    }
    std::vector<const char*> path_ptrs;
    for (const std::string& p : paths)
        path_ptrs.push_back(p.c_str());

    // Fds. Every fd handed to the child is at or above err_at, one past every target
    // number, so the child's dup2 calls can never overwrite a source that is still to be
    // moved: a caller's fd is always duplicated there (and checked by that); one spawn made
    // itself (a pipe end, /dev/null) only if it is below.
    int top_target = 2;
    for (auto [from, to] : o.pass_fds) {
        if (from < 0 || to < 0)
            throw_errno(EBADF, what + ": negative fd in pass_fds");
        top_target = std::max(top_target, to);
    }
    const int err_at = top_target + 1;

    std::shared_ptr<loop::impl> lpi = detail::loop_access::state(lp);
    auto st = std::make_shared<child::state>();
    st->lp = lpi;
    std::vector<unique_fd> sources;  // the child's fds, closed in the parent afterwards
    std::vector<int> move_from, move_to;
    unique_fd devnull;
    auto add_move = [&](int fd, int to, const char* name) {
        sources.push_back(dup_above(fd, err_at, what + ": " + name + ": fd " + std::to_string(fd)));
        move_from.push_back(sources.back().get());
        move_to.push_back(to);
    };
    auto add_own_move = [&](int fd, int to, const char* name) {
        if (fd < err_at) {
            add_move(fd, to, name);
            return;
        }
        move_from.push_back(fd);
        move_to.push_back(to);
    };
    struct {
        const stdio& mode;
        int target;
        unique_fd& parent_end;
        const char* name;
    } stdios[] = {{o.stdin_mode, 0, st->in, "stdin"},
                  {o.stdout_mode, 1, st->out, "stdout"},
                  {o.stderr_mode, 2, st->err, "stderr"}};
    for (auto& s : stdios) {
        switch (s.mode.how) {
            case stdio::kind::inherit:
                break;
            case stdio::kind::null:
                if (!devnull) {
                    devnull.reset(::open("/dev/null", O_RDWR | O_CLOEXEC));
                    if (!devnull)
                        throw_errno(what + ": open /dev/null");
                }
                add_own_move(devnull.get(), s.target, s.name);
                break;
            case stdio::kind::fd:
                add_move(s.mode.fd, s.target, s.name);
                break;
            case stdio::kind::pipe: {
                // Blocking for the child, non-blocking for us: each end is a file description
                // of its own, but pipe2's O_NONBLOCK would set both. No F_GETFL: a pipe end
                // just made has no file status flag set, and F_SETFL ignores the access mode.
                pipe_pair p = make_cloexec_pipe(false, what + ": " + s.name);
                bool child_reads = s.target == 0;
                unique_fd& mine = child_reads ? p.write : p.read;
                unique_fd& theirs = child_reads ? p.read : p.write;
                if (::fcntl(mine.get(), F_SETFL, O_NONBLOCK) < 0)
                    throw_errno(what + ": " + s.name + ": fcntl(O_NONBLOCK)");
                add_own_move(theirs.get(), s.target, s.name);
                if (theirs.get() >= err_at)
                    sources.push_back(std::move(theirs));
                s.parent_end = std::move(mine);
                break;
            }
        }
    }
    for (auto [from, to] : o.pass_fds)
        add_move(from, to, "pass_fds");

    std::vector<int> close_low;
    for (int fd = 3; fd < err_at; ++fd)
        if (std::find(move_to.begin(), move_to.end(), fd) == move_to.end())
            close_low.push_back(fd);

    spawn_plan plan;
    plan.paths = path_ptrs.data();
    plan.npaths = path_ptrs.size();
    plan.argv = argv.data();
    plan.envp = envp;
    plan.cwd = o.cwd.empty() ? nullptr : o.cwd.c_str();
    plan.move_from = move_from.data();
    plan.move_to = move_to.data();
    plan.nmoves = move_from.size();
    plan.close_low = close_low.data();
    plan.nclose_low = close_low.size();
    plan.err_at = err_at;
    // NSIG is not POSIX.1-2008; SIGRTMAX is (with the realtime signals), and is a call on
    // some libcs, so it is read here in the parent, never in the child.
#if defined(NSIG)
    plan.signal_limit = NSIG;
#elif defined(SIGRTMAX)
    plan.signal_limit = SIGRTMAX + 1;
#endif
#if !ZREAP_HAVE_CLOSEFROM
    struct rlimit rl {};
    plan.close_limit = 65536;
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        plan.close_limit = static_cast<int>(std::min<rlim_t>(rl.rlim_cur, 1 << 30));
#endif
    switch (o.group) {
        case spawn_options::group_mode::inherit:
            plan.group = spawn_plan::group_mode::inherit;
            break;
        case spawn_options::group_mode::new_group:
            plan.group = spawn_plan::group_mode::new_group;
            break;
        case spawn_options::group_mode::new_session:
            plan.group = spawn_plan::group_mode::new_session;
            break;
    }
    st->leads_group = o.group != spawn_options::group_mode::inherit;
    plan.stderr_to_stdout = o.stderr_to_stdout;
    plan.parent_death_signal = o.parent_death_signal;
    plan.parent_pid = ::getpid();
    if (rlim_t soft; detail::fd_limit_before_raise(soft)) {
        struct rlimit now {};
        if (::getrlimit(RLIMIT_NOFILE, &now) == 0 && now.rlim_cur != soft) {
            plan.restore_nofile = true;
            plan.nofile_soft = std::min(soft, now.rlim_max);
            plan.nofile_hard = now.rlim_max;
        }
    }

    // Every signal blocked around the creation: no handler may run in a child that shares
    // our memory before it has reset its dispositions.
    sigset_t all, saved;
    sigfillset(&all);
    pid_t pid = -1;
    int pidfd = -1;
    int create_errno = 0;
    bool created = false;
    // How the child reports a failure before exec (stage and errno). A clone child shares
    // our memory and clone returns only once it has exec'd or exited (CLONE_VM |
    // CLONE_VFORK), so it writes the report here, as glibc's posix_spawn does: no pipe, no
    // syscall. The portable path uses a close-on-exec pipe: POSIX leaves writes to memory
    // by a vfork child undefined, and fork shares nothing.
    detail::spawn_failure report{};
    pipe_pair errpipe;
#if ZREAP_HAVE_CLONE_PIDFD
    if (detail::loop_backend(*lpi) == backend::pidfd) {
        plan.err_fd = -1;
        plan.report = &report;
        pthread_sigmask(SIG_SETMASK, &all, &saved);
        pid = detail::clone_with_pidfd(plan, &pidfd);
        create_errno = errno;
        pthread_sigmask(SIG_SETMASK, &saved, nullptr);
        // A seccomp filter or an old kernel may refuse CLONE_PIDFD: the portable path
        // still works, and the pidfd backend then opens its pidfd itself.
        created =
            pid >= 0 || (create_errno != ENOSYS && create_errno != EINVAL && create_errno != EPERM);
    }
#endif
    if (!created) {
        // Made only now, with every source in place already: the child moves the write end
        // to err_at only after its moves.
        errpipe = make_error_pipe(err_at, what);
        plan.err_fd = errpipe.write.get();
        pthread_sigmask(SIG_SETMASK, &all, &saved);
        pid = create_portable(&plan);
        create_errno = errno;
        pthread_sigmask(SIG_SETMASK, &saved, nullptr);
    }
    if (pid < 0)
        throw_errno(create_errno, what + ": creating the process");
    st->pid = pid;
    st->pidfd.reset(pidfd);

    // Our copy of the write end must go before reading, or EOF would never come.
    errpipe.write.reset();
    sources.clear();
    devnull.reset();
    detail::spawn_failure f{};
    if (errpipe.read) {
        ssize_t n;
        while ((n = ::read(errpipe.read.get(), &f, sizeof f)) < 0 && errno == EINTR) {
        }
        if (n != static_cast<ssize_t>(sizeof f))
            f.stage = 0;
    } else {
        // clone has returned, so the child has exec'd, or written this and exited. Read
        // through volatile: the write came from another process sharing our memory, which
        // the C++ memory model knows nothing of. The compiler must reload it anyway, since
        // its address escaped into clone through the plan; volatile keeps that true should
        // clone_with_pidfd ever be inlined or seen through with LTO, where nothing visible
        // writes `report` between its zeroing above and here.
        const volatile detail::spawn_failure& r = report;
        f.err = r.err;
        f.stage = r.stage;
    }
    if (f.stage != 0) {
        reap_blocking(pid);  // it has _exited already or is about to: no zombie is left
        std::string where = stage_name(f.stage);
        if (f.stage == static_cast<int>(spawn_stage::chdir))
            where += " to " + o.cwd;
        throw_errno(f.err, what + ": " + where);
    }

    if (!on_exit)
        on_exit = [](const exit_status&) {};
    std::vector<int> drain;
    if (st->out)
        drain.push_back(st->out.get());
    if (st->err)
        drain.push_back(st->err.get());
    try {
        // The loop marks st reaped and removes its terminate() timer when it reaps the
        // child; the callback only has to pass the status on.
        st->src = detail::watch_spawned(*lpi, st, std::move(on_exit), std::move(drain));
    } catch (...) {
        // Nothing may be left behind: the child is running, so stop it and reap it.
        st->send_unchecked(SIGKILL, false);
        reap_blocking(pid);
        throw;
    }
    return st;
}

}  // namespace

}  // namespace zreap
