// Spawn + reap throughput: /bin/true, a fixed number in flight, through zreap::spawn and
// each compiled backend, against the floor: posix_spawn and a blocking waitpid, no loop.
// Rounds are interleaved (floor, then every backend, again and again) so that the load of
// a shared machine hits all of them alike; each round's ratio is taken within the round.
//
//   spawn_bench [--spawns N] [--inflight K] [--rounds R]
//
// Prints one line per round and measurement, then the median per backend. Not a test: it
// asserts nothing.

#include <spawn.h>
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

double us_per_spawn(clock_type::duration d, int n) {
    return std::chrono::duration<double, std::micro>(d).count() / n;
}

// The floor: nothing can spawn and learn of an exit faster than posix_spawn plus a
// blocking waitpid. The process has no other children here, so waitpid(-1) is fair.
double run_floor(const config& c) {
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
    auto t0 = clock_type::now();
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
    return us_per_spawn(clock_type::now() - t0, c.spawns);
}

double run_zreap(zreap::backend b, const config& c) {
    zreap::loop lp(b);
    zreap::spawn_options o;
    o.argv = {program};
    int started = 0, done = 0;
    std::function<void(const zreap::exit_status&)> on_exit;
    auto start_one = [&] {
        zreap::spawn(lp, o, on_exit);
        ++started;
    };
    on_exit = [&](const zreap::exit_status&) {
        ++done;
        if (started < c.spawns)
            start_one();
    };
    auto t0 = clock_type::now();
    while (started < std::min(c.inflight, c.spawns))
        start_one();
    lp.run();
    if (done != c.spawns) {
        std::fprintf(stderr, "%s: %d of %d exits reported\n", std::string(to_string(b)).c_str(),
                     done, c.spawns);
        std::exit(1);
    }
    return us_per_spawn(clock_type::now() - t0, c.spawns);
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
    std::vector<double> floors;
    std::map<std::string, std::vector<double>> us, ratios;
    for (int r = 0; r < c.rounds; ++r) {
        double f = run_floor(c);
        floors.push_back(f);
        std::printf("round %d  posix_spawn+waitpid %8.1f us\n", r + 1, f);
        for (zreap::backend b : backends) {
            std::string name(to_string(b));
            double t = run_zreap(b, c);
            us[name].push_back(t);
            ratios[name].push_back(t / f);
            std::printf("round %d  %-19s %8.1f us  %.3fx\n", r + 1, name.c_str(), t, t / f);
        }
    }
    std::printf(
        "\nmedian over %d rounds (us per spawn+reap; ratio = median of per-round "
        "ratios to the floor)\n",
        c.rounds);
    std::printf("  %-19s %8.1f us  1.000x\n", "posix_spawn+waitpid", median(floors));
    for (zreap::backend b : backends) {
        std::string name(to_string(b));
        std::printf("  %-19s %8.1f us  %.3fx\n", name.c_str(), median(us[name]),
                    median(ratios[name]));
    }
    return 0;
}
