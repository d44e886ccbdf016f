#pragma once

// Installing a seccomp filter in a test: everything is allowed but what the rules refuse.
// A filter cannot be removed again, so the tests install it in a child of their own.

#include <seccomp.h>

#include <cstring>
#include <functional>
#include <string>

namespace zreap_test {

/// Installs a filter that allows every system call but those @p add_rules refuses (it
/// returns 0 or seccomp_rule_add's negative errno). Returns "" once the filter is loaded,
/// else what failed.
inline std::string install_seccomp(const std::function<int(scmp_filter_ctx)>& add_rules) {
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx)
        return "seccomp_init failed";
    // libseccomp sets no_new_privs itself (SCMP_FLTATR_CTL_NNP), which a non-root process
    // needs before it may install a filter.
    int rc = add_rules(ctx);
    if (rc == 0)
        rc = seccomp_load(ctx);
    seccomp_release(ctx);
    return rc == 0 ? "" : std::string("seccomp: ") + std::strerror(-rc);
}

}  // namespace zreap_test
