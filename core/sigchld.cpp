// Process-wide facts about SIGCHLD that every backend shares, and the registry that keeps
// two loops from watching one pid.

#include <signal.h>

#include <mutex>
#include <string>
#include <unordered_set>

#include "child_watcher.hpp"
#include "error.hpp"

namespace zreap::detail {

const char* sigchld_disposition_problem() noexcept {
    struct sigaction sa {};
    if (::sigaction(SIGCHLD, nullptr, &sa) != 0)
        return nullptr;
    // Either makes the kernel reap exited children itself: waits fail with ECHILD and no
    // exit status could ever be reported.
    if (sa.sa_handler == SIG_IGN)
        return "unusable while SIGCHLD is set to SIG_IGN";
    if (sa.sa_flags & SA_NOCLDWAIT)
        return "unusable while SIGCHLD has SA_NOCLDWAIT";
    return nullptr;
}

std::string sigchld_why_unusable() noexcept {
    const char* problem = sigchld_disposition_problem();
    return problem ? problem : "";
}

void require_reapable_sigchld(const char* who) {
    if (const char* problem = sigchld_disposition_problem())
        throw_errno(EINVAL, std::string(who) + ": " + problem +
                                " (the kernel would reap children before zreap could)");
}

namespace {
std::mutex claims_mutex;
std::unordered_set<pid_t>& claims() {
    static auto* set = new std::unordered_set<pid_t>;  // never destroyed: loops may outlive statics
    return *set;
}
}  // namespace

bool claim_pid(pid_t pid) {
    std::lock_guard<std::mutex> lock(claims_mutex);
    return claims().insert(pid).second;
}

void release_pid(pid_t pid) noexcept {
    std::lock_guard<std::mutex> lock(claims_mutex);
    claims().erase(pid);
}

namespace {
std::mutex loops_mutex;
int live_loops = 0;
int live_foreign_reapers = 0;
}  // namespace

void register_loop(backend b, bool reaps_foreign_children) {
    std::lock_guard<std::mutex> lock(loops_mutex);
    const std::string what = "zreap::loop(" + std::string(to_string(b)) + ")";
    if (reaps_foreign_children && live_loops > 0)
        throw_errno(EBUSY, what +
                               ": another zreap loop lives in this process, and this backend "
                               "reaps every child on SIGCHLD, so it would take that loop's "
                               "children's exits");
    if (live_foreign_reapers > 0)
        throw_errno(EBUSY, what +
                               ": a zreap loop whose backend reaps every child on SIGCHLD "
                               "(libev) lives in this process and would take this loop's "
                               "children's exits");
    ++live_loops;
    if (reaps_foreign_children)
        ++live_foreign_reapers;
}

void unregister_loop(bool reaps_foreign_children) noexcept {
    std::lock_guard<std::mutex> lock(loops_mutex);
    --live_loops;
    if (reaps_foreign_children)
        --live_foreign_reapers;
}

}  // namespace zreap::detail
