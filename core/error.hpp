#pragma once

#include <cerrno>
#include <string>
#include <system_error>

namespace zreap::detail {

/// Throws std::system_error for @p err with "what was attempted" as its message.
[[noreturn]] inline void throw_errno(int err, const std::string& what) {
    throw std::system_error(err, std::generic_category(), what);
}

/// Same, for the errno left by the call that just failed.
[[noreturn]] inline void throw_errno(const std::string& what) {
    throw_errno(errno, what);
}

}  // namespace zreap::detail
