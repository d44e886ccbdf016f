#pragma once

// The measurements. Each runs inside a worker process (one subject, one scenario) and
// prints its results on stdout, one line each, for the driver to collect:
//   S <key> <value>    a sample (nanoseconds, unless the key says otherwise)
//   N <text>           a note (not applicable, skipped, limit raised)

#include <string>
#include <vector>

namespace bench {

struct params {
    int latency_samples = 200;       // per round, lat_fork and lat_exec
    int delay_us = 1000;             // the child sleeps this long so the loop is idle when it exits
    int throughput_children = 2000;  // exec'd children reaped per throughput round
    int in_flight = 50;              // of which this many alive at once
    std::vector<int> live;           // K for the scaling rows
    int scale_samples = 100;         // latency samples per K
    int idle_ms = 1000;              // how long the idle row watches one live child
    int load_children = 1000;        // children exiting during the REQ/REP row
    int load_warmup = 300;           // round trips measured before the storm
    int crowd = 20000;               // live children of the crowd row
    int crowd_nofile = 1024;         // the soft RLIMIT_NOFILE the crowd row runs under

    std::vector<std::string> to_args() const;
    static params from_args(const std::vector<std::string>& args);
};

/// "1,100,1000" -> {1, 100, 1000}; empty items are skipped. Throws on a non-number.
std::vector<int> parse_ints(const std::string& s);

/// Every scenario, in the order the driver runs them. "crowd" is not among them: it runs
/// only when asked for (zreap-bench --crowd, or --scenarios crowd).
const std::vector<std::string>& scenario_names();

/// Runs @p scenario for @p subject ("floor" or a runner subject) in this process, prints
/// the results on stdout and returns the exit code for the worker.
int run_worker(const std::string& subject, const std::string& scenario, const params& p,
               const std::string& helper_path);

}  // namespace bench
