// The exec'd child of the benchmarks, kept tiny so that its own start-up costs little:
//   bench-child exit             exits at once
//   bench-child stamp DELAY_US   sleeps DELAY_US, writes its CLOCK_MONOTONIC time (int64 ns)
//                                to stdout, exits: the parent learns when the exit began
//   bench-child hold             at the lowest priority (SCHED_IDLE), exits when stdin reaches
//                                end-of-file
//                                (the parent closes a gate)

#include <sched.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

int main(int argc, char** argv) {
    if (argc >= 2 && std::strcmp(argv[1], "exit") == 0)
        return 0;
    if (argc >= 3 && std::strcmp(argv[1], "stamp") == 0) {
        long us = std::strtol(argv[2], nullptr, 10);
        timespec d{us / 1'000'000, (us % 1'000'000) * 1000};
        while (::nanosleep(&d, &d) < 0 && errno == EINTR) {
        }
        timespec ts;
        ::clock_gettime(CLOCK_MONOTONIC, &ts);
        std::int64_t ns = static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
        if (::write(1, &ns, sizeof ns) != static_cast<ssize_t>(sizeof ns))
            _exit(2);
        _exit(0);
    }
    if (argc >= 2 && std::strcmp(argv[1], "hold") == 0) {
        // SCHED_IDLE (Linux): a waking ordinary thread preempts it at once, so that when a
        // thousand of them are released together their exits are pushed into the time the
        // loop and the client being measured leave idle. nice 19 alone does not do that: a
        // thousand runnable nice-19 tasks outweigh one nice-0 thread fifteen to one.
        ::setpriority(PRIO_PROCESS, 0, 19);
#ifdef SCHED_IDLE
        sched_param sp{};
        ::sched_setscheduler(0, SCHED_IDLE, &sp);
#endif
        char buf[64];
        for (;;) {
            ssize_t n = ::read(0, buf, sizeof buf);
            if (n == 0 || (n < 0 && errno != EINTR))
                _exit(0);
        }
    }
    return 64;
}
