// Spawn + reap throughput: /bin/true, a fixed number in flight, through zreap::spawn and
// each compiled backend, against the floor: posix_spawn and a blocking waitpid, no loop.
// Rounds are interleaved (floor, then every backend, again and again) so that the load of
// a shared machine hits all of them alike; each round's ratio is taken within the round.
//
//   spawn_bench [--spawns N] [--inflight K] [--rounds R]
//
// Prints one line per round and measurement, then the median per backend. Two figures
// each: wall time per spawn+reap (what a user waits for), and CPU time per spawn+reap of
// this process and its children together (getrusage), which a loaded machine distorts far
// less than wall time. Not a test: it asserts nothing.

#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <zreap/zreap.hpp>

extern char** environ;

namespace {

using clock_type = std::chrono::steady_clock;

const char* const program = "/bin/true";

struct config {
    int spawns = 2000;
    int inflight = 50;
    int rounds = 5;
};

struct sample {
    double wall_us;  // per spawn+reap
    double cpu_us;   // per spawn+reap, this process and its reaped children
};

double cpu_us_now() {
    double us = 0;
    for (int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
        struct rusage ru {};
        ::getrusage(who, &ru);
        us += ru.ru_utime.tv_sec * 1e6 + ru.ru_utime.tv_usec + ru.ru_stime.tv_sec * 1e6 +
              ru.ru_stime.tv_usec;
    }
    return us;
}

struct stopwatch {
    clock_type::time_point t0 = clock_type::now();
    double cpu0 = cpu_us_now();
    sample per(int n) const {
        return {std::chrono::duration<double, std::micro>(clock_type::now() - t0).count() / n,
                (cpu_us_now() - cpu0) / n};
    }
};

// The floor: nothing can spawn and learn of an exit faster than posix_spawn plus a
// blocking waitpid. The process has no other children here, so waitpid(-1) is fair.
sample run_floor(const config& c) {
    char* argv[] = {const_cast<char*>(program), nullptr};
    int started = 0, done = 0;
    auto start_one = [&] {
        pid_t pid;
        if (posix_spawn(&pid, program, nullptr, nullptr, argv, environ) != 0) {
            std::perror("posix_spawn");
            std::exit(1);
        }
        ++started;
    };
    stopwatch sw;
    while (started < std::min(c.inflight, c.spawns))
        start_one();
    while (done < c.spawns) {
        int st;
        pid_t pid = ::waitpid(-1, &st, 0);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            std::perror("waitpid");
            std::exit(1);
        }
        ++done;
        if (started < c.spawns)
            start_one();
    }
    return sw.per(c.spawns);
}

sample run_zreap(zreap::backend b, const config& c) {
    zreap::loop lp(b);
    zreap::spawn_options o;
    o.argv = {program};
    int started = 0, done = 0;
    std::function<void(const zreap::exit_status&)> on_exit;
    auto start_one = [&] {
        (void)zreap::spawn(lp, o, on_exit);
        ++started;
    };
    on_exit = [&](const zreap::exit_status&) {
        ++done;
        if (started < c.spawns)
            start_one();
    };
    stopwatch sw;
    while (started < std::min(c.inflight, c.spawns))
        start_one();
    lp.run();
    if (done != c.spawns) {
        std::fprintf(stderr, "%s: %d of %d exits reported\n", std::string(to_string(b)).c_str(),
                     done, c.spawns);
        std::exit(1);
    }
    return sw.per(c.spawns);
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    std::size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
    config c;
    for (int i = 1; i + 1 < argc; i += 2) {
        int v = std::atoi(argv[i + 1]);
        if (!std::strcmp(argv[i], "--spawns"))
            c.spawns = v;
        else if (!std::strcmp(argv[i], "--inflight"))
            c.inflight = v;
        else if (!std::strcmp(argv[i], "--rounds"))
            c.rounds = v;
    }
    std::vector<zreap::backend> backends;
    for (zreap::backend b : zreap::compiled_backends())
        if (zreap::backend_usable(b))
            backends.push_back(b);

    std::printf("spawn+reap of %s, %d per run, %d in flight, %d interleaved rounds\n", program,
                c.spawns, c.inflight, c.rounds);
    std::vector<double> floor_wall, floor_cpu;
    std::map<std::string, std::vector<double>> wall, cpu, wall_ratio, cpu_ratio;
    for (int r = 0; r < c.rounds; ++r) {
        sample f = run_floor(c);
        floor_wall.push_back(f.wall_us);
        floor_cpu.push_back(f.cpu_us);
        std::printf("round %d  %-19s wall %8.1f us         cpu %7.1f us\n", r + 1,
                    "posix_spawn+waitpid", f.wall_us, f.cpu_us);
        for (zreap::backend b : backends) {
            std::string name(to_string(b));
            sample t = run_zreap(b, c);
            wall[name].push_back(t.wall_us);
            cpu[name].push_back(t.cpu_us);
            wall_ratio[name].push_back(t.wall_us / f.wall_us);
            cpu_ratio[name].push_back(t.cpu_us / f.cpu_us);
            std::printf("round %d  %-19s wall %8.1f us %.3fx  cpu %7.1f us %.3fx\n", r + 1,
                        name.c_str(), t.wall_us, t.wall_us / f.wall_us, t.cpu_us,
                        t.cpu_us / f.cpu_us);
        }
    }
    std::printf(
        "\nmedian over %d rounds, per spawn+reap (ratio = median of the per-round "
        "ratios to the floor)\n",
        c.rounds);
    std::printf("  %-19s wall %8.1f us 1.000x  cpu %7.1f us 1.000x\n", "posix_spawn+waitpid",
                median(floor_wall), median(floor_cpu));
    for (zreap::backend b : backends) {
        std::string name(to_string(b));
        std::printf("  %-19s wall %8.1f us %.3fx  cpu %7.1f us %.3fx\n", name.c_str(),
                    median(wall[name]), median(wall_ratio[name]), median(cpu[name]),
                    median(cpu_ratio[name]));
    }
    return 0;
}
