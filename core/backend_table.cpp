// The backend table: every compiled backend in order of preference, and the choice of
// the default ("auto" = the first usable one of the table). Backends are listed here explicitly
// rather than registering themselves from static constructors, which a static archive's linker
// would silently drop.

#include <cstdlib>
#include <string>

#include "child_watcher.hpp"
#include "error.hpp"
#include "zreap_config.h"

namespace zreap::detail {
#if ZREAP_HAVE_PIDFD
extern const backend_entry pidfd_backend_entry;
#endif
#if ZREAP_HAVE_SIGNALFD
extern const backend_entry signalfd_backend_entry;
#endif
#if ZREAP_HAVE_SELFPIPE
extern const backend_entry selfpipe_backend_entry;
#endif
#if ZREAP_HAVE_SIGACTION
extern const backend_entry sigaction_backend_entry;
#endif
#if ZREAP_HAVE_LIBEV
extern const backend_entry libev_backend_entry;
#endif
#if ZREAP_HAVE_IO_URING
extern const backend_entry io_uring_backend_entry;
#endif

namespace {

// In order of preference, which is the order "auto" tries them in. io_uring comes after the
// three that scale with the number of children: every pending WAITID makes every child exit
// of the process cost more in the kernel (docs/backends/io_uring.md). signalfd and libev come
// last: signalfd needs SIGCHLD blocked in every thread of the host program, and libev reaps
// children that belong to other code. So in practice "auto" takes these three only in a build
// (or a process) where none of pidfd, selfpipe and sigaction is there or usable. meson.build
// lists the backends in the same order (all_backends), for its summary.
const backend_entry* const table[] = {
#if ZREAP_HAVE_PIDFD
    &pidfd_backend_entry,
#endif
#if ZREAP_HAVE_SELFPIPE
    &selfpipe_backend_entry,
#endif
#if ZREAP_HAVE_SIGACTION
    &sigaction_backend_entry,
#endif
#if ZREAP_HAVE_IO_URING
    &io_uring_backend_entry,
#endif
#if ZREAP_HAVE_SIGNALFD
    &signalfd_backend_entry,
#endif
#if ZREAP_HAVE_LIBEV
    &libev_backend_entry,
#endif
    nullptr,  // keeps the array non-empty when nothing is compiled in
};

}  // namespace

const backend_entry* find_backend(backend b) noexcept {
    for (const backend_entry* e : table)
        if (e && e->id == b)
            return e;
    return nullptr;
}

}  // namespace zreap::detail

namespace zreap {

using detail::find_backend;

std::string_view to_string(backend b) noexcept {
    switch (b) {
        case backend::pidfd:
            return "pidfd";
        case backend::signalfd:
            return "signalfd";
        case backend::selfpipe:
            return "selfpipe";
        case backend::sigaction:
            return "sigaction";
        case backend::libev:
            return "libev";
        case backend::io_uring:
            return "io_uring";
    }
    return "unknown";
}

std::optional<backend> backend_from_string(std::string_view name) noexcept {
    for (backend b : {backend::pidfd, backend::signalfd, backend::selfpipe, backend::sigaction,
                      backend::libev, backend::io_uring})
        if (to_string(b) == name)
            return b;
    return std::nullopt;
}

std::vector<backend> compiled_backends() {
    std::vector<backend> out;
    for (const detail::backend_entry* e : detail::table)
        if (e)
            out.push_back(e->id);
    return out;
}

bool backend_usable(backend b) noexcept {
    const detail::backend_entry* e = find_backend(b);
    return e && e->usable();
}

capabilities backend_capabilities(backend b) noexcept {
    capabilities c;
#if !ZREAP_HAVE_WAIT4
    // The signal backends reap with wait4 to learn the usage; without it, waitid(P_PID).
    c.reports_usage = b == backend::pidfd || b == backend::io_uring;
#endif
    switch (b) {
        case backend::pidfd:
            break;
        case backend::signalfd:
            c.multiple_loops = false;
            c.needs_sigchld_blocked = true;
            // The rescue: a SIGCHLD that reaches a thread not blocking it (see
            // backends/signalfd).
            c.installs_signal_handler = true;
            break;
        case backend::selfpipe:
            c.installs_signal_handler = true;
            break;
        case backend::sigaction:
            c.race_free = false;
            c.installs_signal_handler = true;
            break;
        case backend::libev:
            // zreap's shared handler wakes the poll and feeds libev; see backends/libev.
            c.reaps_foreign_children = true;
            c.reports_usage = false;  // libev reaps with waitpid()
            c.multiple_loops = false;
            c.installs_signal_handler = true;
            break;
        case backend::io_uring:
            break;
    }
    return c;
}

const detail::backend_entry& detail::require_usable(backend b, const std::string& origin) {
    std::string name(to_string(b));
    if (!find_backend(b))
        detail::throw_errno(
            ENOTSUP, origin + ": backend '" + name + "' is not compiled into this zreap build");
    const detail::backend_entry& e = *find_backend(b);
    if (!e.usable()) {
        std::string why = e.why_unusable ? e.why_unusable() : std::string();
        if (why.empty())
            why = "not usable in this process";
        detail::throw_errno(ENOTSUP, origin + ": backend '" + name + "' is " + why);
    }
    return e;
}

namespace {

backend pick(std::string_view name, const std::string& origin) {
    if (name == "auto") {
        // The first usable of what is compiled in; the error names exactly those.
        std::string tried;
        for (backend b : compiled_backends()) {
            if (backend_usable(b))
                return b;
            tried += (tried.empty() ? "" : ", ") + std::string(to_string(b));
        }
        detail::throw_errno(
            ENOTSUP, origin + ": none of the backends compiled in is usable here (" + tried + ")");
    }
    std::optional<backend> b = backend_from_string(name);
    if (!b)
        detail::throw_errno(EINVAL, origin + ": unknown backend '" + std::string(name) +
                                        "' (expected auto, pidfd, signalfd, selfpipe, "
                                        "sigaction, libev or io_uring)");
    return detail::require_usable(*b, origin).id;
}

}  // namespace

backend default_backend() {
    if (const char* env = std::getenv("ZREAP_BACKEND"); env && *env)
        return pick(env, "ZREAP_BACKEND=" + std::string(env));
    return pick(ZREAP_DEFAULT_BACKEND,
                "default backend (-Ddefault_backend=" ZREAP_DEFAULT_BACKEND ")");
}

}  // namespace zreap
