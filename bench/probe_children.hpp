#pragma once

// What the clock-stamp probes (zreap-wait-costs, zreap-waitid-queue) share: the clock, the
// child that stamps it right before it exits, and live children held on a gate.

#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace probe {

/// CLOCK_MONOTONIC in nanoseconds.
inline std::int64_t now_ns() {
    timespec t;
    ::clock_gettime(CLOCK_MONOTONIC, &t);
    return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

/// A forked child that sleeps 1 ms (so the parent is waiting when it exits), writes now_ns()
/// to @p stamp (shared memory) and exits. @p stamp is 0 until then.
inline pid_t stamping_child(volatile std::int64_t* stamp) {
    *stamp = 0;
    pid_t p = ::fork();
    if (p < 0) {
        std::perror("fork");
        std::exit(1);
    }
    if (p == 0) {
        timespec d{0, 1'000'000};
        ::nanosleep(&d, nullptr);
        *stamp = now_ns();
        ::_exit(0);
    }
    return p;
}

/// Forks up to @p k children that block reading @p gate_rd (their only fd, as stdin) and
/// exit when it reaches end of file; fewer if fork fails (said on stderr).
inline std::vector<pid_t> gated_children(int k, int gate_rd) {
    std::vector<pid_t> live;
    for (int j = 0; j < k; ++j) {
        pid_t p = ::fork();
        if (p < 0) {
            std::perror("fork of a live child");
            break;
        }
        if (p == 0) {
            ::dup2(gate_rd, 0);
            ::close_range(1, ~0U, 0);
            char c;
            while (::read(0, &c, 1) < 0 && errno == EINTR) {
            }
            ::_exit(0);
        }
        live.push_back(p);
    }
    return live;
}

}  // namespace probe
