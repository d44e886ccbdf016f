#include "fd_limit.hpp"

#include <mutex>

namespace zreap::detail {

namespace {
std::mutex limit_mutex;
bool raised = false;
rlim_t soft_before = 0;
}  // namespace

bool raise_fd_limit() noexcept {
    std::lock_guard<std::mutex> lock(limit_mutex);
    struct rlimit rl {};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return false;
    // At the hard limit already: raised by another thread a moment ago (worth one more
    // try), or never raisable.
    if (rl.rlim_cur == rl.rlim_max)
        return raised;
    const rlim_t before = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return false;
    if (!raised) {
        raised = true;
        soft_before = before;
    }
    return true;
}

bool fd_limit_before_raise(rlim_t& soft) noexcept {
    std::lock_guard<std::mutex> lock(limit_mutex);
    soft = soft_before;
    return raised;
}

}  // namespace zreap::detail
