#include "reaper.hpp"

#include <sys/resource.h>
#include <sys/wait.h>

#include <cerrno>
#include <string>

#include "error.hpp"
#include "zreap_config.h"

namespace zreap::detail {

void pid_reaper::watch(pid_t pid, bool exited) {
    watched_.insert(pid);
    if (exited)
        hints_.push_back(pid);
}

void pid_reaper::hint(pid_t pid) {
    if (pid > 0 && watched_.count(pid))
        hints_.push_back(pid);
}

bool pid_reaper::reap(bool signalled, std::vector<exit_status>& out, std::size_t max) {
    const std::size_t limit = out.size() + max;
    const bool peek = signalled || more_;
    const std::size_t start = out.size();
    while (!hints_.empty() && out.size() < limit) {
        pid_t pid = hints_.back();
        hints_.pop_back();
        if (watched_.count(pid))
            try_reap(pid, out);
    }
    if (peek && out.size() > start) {
        // The hints found exits: report them now and peek on the next iteration (the loop
        // polls again without blocking). The peek makes the kernel walk every child of the
        // process, 10 us with 1000 children and 200 us with 4096 (bench/wait_costs.cpp):
        // time that would otherwise stand between these exits and their callbacks.
        more_ = true;
        return true;
    }
    if (peek && out.size() < limit)
        peek_and_reap(out, limit);
    more_ = out.size() >= limit;
    return more_ || !hints_.empty();
}

// Reaps @p pid if it has exited. True if it was reaped (or found reaped by other code).
// wait4, where the C library has it (not POSIX, but every Unix), also reports the child's
// resource usage; waitid(P_PID) otherwise.
bool pid_reaper::try_reap(pid_t pid, std::vector<exit_status>& out) {
    // Room for the status before the reap: once wait4 has reaped the child, an allocation
    // failure in push_back would lose its exit.
    if (out.size() == out.capacity())
        out.reserve(2 * out.size() + 8);
#if ZREAP_HAVE_WAIT4
    struct rusage ru {};
    int status = 0;
    pid_t rc;
    while ((rc = ::wait4(pid, &status, WNOHANG, &ru)) < 0 && errno == EINTR) {
    }
    if (rc == 0)
        return false;  // still running
    if (rc > 0) {
        exit_status st = exit_status::from_wait_status(pid, status);
        st.set_usage(ru);
        out.push_back(st);
        watched_.erase(pid);
        return true;
    }
#else
    siginfo_t si{};
    int rc;
    while ((rc = ::waitid(P_PID, static_cast<id_t>(pid), &si, WEXITED | WNOHANG)) < 0 &&
           errno == EINTR) {
    }
    if (rc == 0) {
        if (si.si_pid == 0)
            return false;  // still running
        out.push_back(exit_status::from_siginfo(si));
        watched_.erase(pid);
        return true;
    }
#endif
    if (errno != ECHILD)
        throw_errno(std::string(who_) + ": reaping pid " + std::to_string(pid));
    // Reaped behind our back by other code: report it without a status rather than never
    // report the exit at all.
    out.push_back(exit_status::from_wait_status(pid, exit_status::unknown_raw));
    watched_.erase(pid);
    return true;
}

void pid_reaper::peek_and_reap(std::vector<exit_status>& out, std::size_t limit) {
    while (out.size() < limit) {
        siginfo_t si{};
        int rc = ::waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0 || si.si_pid == 0)
            return;  // ECHILD (no children) or no zombie
        if (watched_.count(si.si_pid)) {
            if (!try_reap(si.si_pid, out))
                return;  // a peeked zombie is always reapable; never spin if it is not
            continue;
        }
        scan(out, limit);
        return;
    }
}

void pid_reaper::scan(std::vector<exit_status>& out, std::size_t limit) {
    // A copy: try_reap erases from watched_ while we walk it.
    scratch_.assign(watched_.begin(), watched_.end());
    for (pid_t pid : scratch_) {
        if (out.size() >= limit)
            return;
        try_reap(pid, out);
    }
}

}  // namespace zreap::detail
