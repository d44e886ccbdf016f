// zreap-bench: every compiled zreap backend against the blocking-waitpid floor and against
// the peer libraries' own loops, interleaved in one run.
//
// The driver never measures anything itself. For every round, scenario and subject it
// re-executes this binary as a worker (`--worker SUBJECT SCENARIO ...`), so that libraries
// that take over SIGCHLD (libev, sd-event, GLib's fallback, zreap's signal backends) never
// share a process, and interleaves the subjects so that a noisy neighbour on a shared
// machine hurts them all alike. It then prints a table, writes CSV files and draws plots.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <zreap/zreap.hpp>

#include "runner.hpp"
#include "scenarios.hpp"

namespace {

using bench::params;

struct options {
    std::string mode = "all";
    std::string out = "bench-out";
    int rounds = 3;
    params p;
    std::vector<std::string> subjects;   // empty = all
    std::vector<std::string> scenarios;  // empty = all
    bool plots = true;
    int worker_timeout_s = 120;
    // Scenarios that run in fewer rounds than the rest (they cost the most time per round).
    std::map<std::string, int> max_rounds{{"idle", 1}};
};

std::vector<std::string> split(const std::string& s, char sep = ',') {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, sep))
        if (!item.empty())
            out.push_back(item);
    return out;
}

std::string self_exe() {
    char buf[4096];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0)
        return "zreap-bench";
    buf[n] = 0;
    return buf;
}

std::string dir_of(const std::string& path) {
    auto pos = path.rfind('/');
    return pos == std::string::npos ? "." : path.substr(0, pos);
}

std::string read_file(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    std::string s = ss.str();
    while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
        s.pop_back();
    return s;
}

// ---- what a key means ----------------------------------------------------------------------

struct key_info {
    std::string title;
    std::string unit;  // "us", "ms", "/s"
    double scale;      // raw value / scale = value in unit
    bool ratio;        // compared with the floor
};

key_info describe(const std::string& key, const params& p) {
    if (key.rfind("pf_", 0) == 0) {
        key_info base = describe(key.substr(3), p);
        return {base.title +
                    ": the floor taken in each subject's worker, sample by sample (paired); "
                    "ratios are the subject's over it",
                base.unit, base.scale, true};
    }
    if (key == "lat_fork")
        return {"exit -> notice, fork/_exit child", "us", 1e3, true};
    if (key == "lat_exec")
        return {"exit -> notice, posix_spawn'd exec child", "us", 1e3, true};
    if (key == "tput")
        return {"reap " + std::to_string(p.throughput_children) + " exec'd children, " +
                    std::to_string(p.in_flight) + " in flight (time per run)",
                "ms", 1e6, true};
    if (key == "tput_cpu")
        return {"the same: CPU time of the parent per child (user + system)", "us", 1e3, true};
    if (key.rfind("scale_", 0) == 0)
        return {"exit -> notice (exec child) with " + key.substr(6) +
                    " other children alive and watched",
                "us", 1e3, true};
    if (key.rfind("mem_", 0) == 0)
        return {"memory per watched child, watching the children up to " + key.substr(4) +
                    ": the subject's RSS + the kernel's unreclaimable slab, before and after "
                    "watching them",
                "B", 1, false};
    const std::string crowd = std::to_string(p.crowd) + " live children, soft RLIMIT_NOFILE " +
                              std::to_string(p.crowd_nofile);
    if (key == "crowd_watched")
        return {"crowd (" + crowd + "): children watched", "", 1, false};
    if (key == "crowd_refused")
        return {"crowd: children the subject refused to watch", "", 1, false};
    if (key == "crowd_lat")
        return {"crowd: exit -> notice (exec child) among them", "us", 1e3, true};
    if (key == "crowd_reap_time")
        return {"crowd: time until every watched exit was reported, all released at once", "ms",
                1e6, true};
    if (key == "crowd_lost")
        return {"crowd: watched exits not reported", "", 1, false};
    if (key == "idle_wps")
        return {"idle: wakeups per second, one live child, no timers (thread context switches)",
                "/s", 1, false};
    if (key == "idle_polls")
        return {"idle: zmq_poll calls per second (loop::stats().polls)", "/s", 1, false};
    if (key == "load_quiet")
        return {"REQ/REP round trip in the loop, no exits", "us", 1e3, true};
    if (key == "load_storm")
        return {"REQ/REP round trip in the loop while " + std::to_string(p.load_children) +
                    " children exit",
                "us", 1e3, true};
    if (key == "load_storm_time")
        return {"time until all " + std::to_string(p.load_children) +
                    " exits were reaped, REQ/REP running",
                "ms", 1e6, true};
    return {key, "", 1, false};
}

// ---- results ---------------------------------------------------------------------------------

struct results {
    std::vector<std::string> key_order;
    std::map<std::string, std::map<std::string, std::vector<double>>> samples;  // key, subject
    std::map<std::string, std::vector<std::pair<int, double>>> raw;  // key|subject -> (round, v)
    std::map<std::string, std::set<std::string>> notes;              // subject -> notes
    int failures = 0;

    void add(const std::string& key, const std::string& subject, int round, double v) {
        if (std::find(key_order.begin(), key_order.end(), key) == key_order.end())
            key_order.push_back(key);
        samples[key][subject].push_back(v);
        raw[key + "|" + subject].emplace_back(round, v);
    }
};

struct stats {
    size_t n = 0;
    double p50 = 0, p99 = 0, max = 0, mean = 0;
};

double percentile(const std::vector<double>& sorted, double q) {
    if (sorted.empty())
        return NAN;
    // Nearest rank.
    size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
    if (rank < 1)
        rank = 1;
    return sorted[std::min(rank, sorted.size()) - 1];
}

stats compute(std::vector<double> v) {
    stats s;
    if (v.empty())
        return s;
    std::sort(v.begin(), v.end());
    s.n = v.size();
    s.p50 = percentile(v, 0.50);
    s.p99 = percentile(v, 0.99);
    s.max = v.back();
    double sum = 0;
    for (double x : v)
        sum += x;
    s.mean = sum / static_cast<double>(v.size());
    return s;
}

// The table's order: latency, throughput, scaling by K, idle, load.
void sort_keys(std::vector<std::string>& keys) {
    auto rank = [](const std::string& k) -> std::pair<int, int> {
        static const std::vector<std::string> order{
            "lat_fork",      "lat_exec",        "tput",
            "tput_cpu",      "scale_",          "mem_",
            "idle_wps",      "idle_polls",      "load_quiet",
            "load_storm",    "load_storm_time", "crowd_watched",
            "crowd_refused", "crowd_lat",       "crowd_reap_time",
            "crowd_lost"};
        if (k.rfind("scale_", 0) == 0)
            return {4, std::stoi(k.substr(6))};
        if (k.rfind("mem_", 0) == 0)
            return {5, std::stoi(k.substr(4))};
        // A paired floor right after its own row.
        const bool paired = k.rfind("pf_", 0) == 0;
        auto it = std::find(order.begin(), order.end(), paired ? k.substr(3) : k);
        return {static_cast<int>(it - order.begin()), paired ? 1 : 0};
    };
    std::stable_sort(keys.begin(), keys.end(),
                     [&](const std::string& a, const std::string& b) { return rank(a) < rank(b); });
}

// ---- workers ---------------------------------------------------------------------------------

// Runs one worker and feeds its samples into @p res. A worker that hangs (a lost wakeup in
// the subject under test) is killed after the timeout and counted as a failure.
void run_one(const options& opt, const std::string& subject, const std::string& scenario, int round,
             results& res) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
        std::perror("pipe2");
        std::exit(1);
    }
    std::vector<std::string> args{self_exe(), "--worker", subject, scenario};
    for (auto& a : opt.p.to_args())
        args.push_back(a);
    pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(fds[1], 1);
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    ::close(fds[1]);
    std::string out;
    char buf[65536];
    bool timed_out = false;
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(opt.worker_timeout_s);
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - std::chrono::steady_clock::now())
                        .count();
        if (left <= 0) {
            timed_out = true;
            ::kill(pid, SIGKILL);
            break;
        }
        pollfd pfd{fds[0], POLLIN, 0};
        int rc = ::poll(&pfd, 1, static_cast<int>(left));
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            continue;
        ssize_t n = ::read(fds[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        out.append(buf, static_cast<size_t>(n));
    }
    ::close(fds[0]);
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    std::istringstream lines(out);
    std::string line;
    while (std::getline(lines, line)) {
        if (line.size() > 2 && line[0] == 'S') {
            std::istringstream ls(line.substr(2));
            std::string key;
            double v;
            if (ls >> key >> v)
                res.add(key, subject, round, v);
        } else if (line.size() > 2 && line[0] == 'N') {
            res.notes[subject].insert(line.substr(2));
        }
    }
    if (timed_out || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        ++res.failures;
        std::string why = timed_out
                              ? "timed out after " + std::to_string(opt.worker_timeout_s) + " s"
                          : WIFSIGNALED(st) ? "killed by signal " + std::to_string(WTERMSIG(st))
                                            : "exit code " + std::to_string(WEXITSTATUS(st));
        res.notes[subject].insert(scenario + ": worker failed (" + why + ")");
        std::fprintf(stderr, "  %s %s: worker failed (%s)\n", scenario.c_str(), subject.c_str(),
                     why.c_str());
    }
}

// ---- output ----------------------------------------------------------------------------------

std::string fmt(double v) {
    if (std::isnan(v))
        return "-";
    char b[32];
    if (std::fabs(v) >= 100)
        std::snprintf(b, sizeof b, "%.0f", v);
    else if (std::fabs(v) >= 10)
        std::snprintf(b, sizeof b, "%.1f", v);
    else
        std::snprintf(b, sizeof b, "%.2f", v);
    return b;
}

std::string fmt_ratio(double v) {
    if (std::isnan(v) || std::isinf(v))
        return "-";
    char b[32];
    std::snprintf(b, sizeof b, "%.2fx", v);
    return b;
}

void print_table(const options& opt, const results& res, const std::vector<std::string>& subjects,
                 std::ostream& os, std::ofstream& csv) {
    csv << "key,subject,n,p50,p99,max,mean,unit,ratio_p50,ratio_p99,ratio_max,description\n";
    for (const auto& key : res.key_order) {
        key_info ki = describe(key, opt.p);
        const auto& by_subject = res.samples.at(key);
        stats floor;
        bool have_floor = false;
        const bool paired = key.rfind("pf_", 0) == 0;
        if (auto it = by_subject.find("floor"); ki.ratio && !paired && it != by_subject.end()) {
            floor = compute(it->second);
            have_floor = true;
        }
        os << "\n" << ki.title << "  [" << ki.unit << "]\n";
        char head[256];
        std::snprintf(head, sizeof head, "  %-16s %6s %10s %10s %10s %9s %9s %9s\n", "subject", "n",
                      "p50", "p99", "max", "p50/floor", "p99/floor", "max/floor");
        os << head;
        for (const auto& subj : subjects) {
            auto it = by_subject.find(subj);
            if (it == by_subject.end())
                continue;
            stats s = compute(it->second);
            double r50 = have_floor ? s.p50 / floor.p50 : NAN;
            double r99 = have_floor ? s.p99 / floor.p99 : NAN;
            double rmax = have_floor ? s.max / floor.max : NAN;
            if (paired) {
                // This row is the subject's own floor; the ratios are the subject's samples
                // of the unpaired row over it.
                auto own = res.samples.at(key.substr(3)).find(subj);
                if (own == res.samples.at(key.substr(3)).end())
                    continue;
                stats mine = compute(own->second);
                r50 = mine.p50 / s.p50;
                r99 = mine.p99 / s.p99;
                rmax = mine.max / s.max;
            }
            const bool show_ratio = have_floor || paired;
            char row[256];
            std::snprintf(row, sizeof row, "  %-16s %6zu %10s %10s %10s %9s %9s %9s\n",
                          subj.c_str(), s.n, fmt(s.p50 / ki.scale).c_str(),
                          fmt(s.p99 / ki.scale).c_str(), fmt(s.max / ki.scale).c_str(),
                          fmt_ratio(r50).c_str(), fmt_ratio(r99).c_str(), fmt_ratio(rmax).c_str());
            os << row;
            csv << key << "," << subj << "," << s.n << "," << s.p50 / ki.scale << ","
                << s.p99 / ki.scale << "," << s.max / ki.scale << "," << s.mean / ki.scale << ","
                << ki.unit << "," << (show_ratio ? std::to_string(r50) : "") << ","
                << (show_ratio ? std::to_string(r99) : "") << ","
                << (show_ratio ? std::to_string(rmax) : "") << ",\"" << ki.title << "\"\n";
        }
    }
    bool any_notes = false;
    for (const auto& subj : subjects) {
        auto it = res.notes.find(subj);
        if (it == res.notes.end())
            continue;
        if (!any_notes)
            os << "\nnotes:\n";
        any_notes = true;
        for (const auto& n : it->second)
            os << "  " << subj << ": " << n << "\n";
    }
}

// One block per subject of (value, percent) points, fewest enough for a smooth curve.
void write_cdf(const std::string& path, const results& res, const std::string& key,
               const std::vector<std::string>& subjects, double scale,
               std::vector<std::string>& titles) {
    std::ofstream f(path);
    auto kit = res.samples.find(key);
    if (kit == res.samples.end())
        return;
    for (const auto& subj : subjects) {
        auto it = kit->second.find(subj);
        if (it == kit->second.end() || it->second.empty())
            continue;
        std::vector<double> v = it->second;
        std::sort(v.begin(), v.end());
        f << "# " << subj << "\n";
        size_t step = std::max<size_t>(1, v.size() / 400);
        // value, percent of samples at or below it, percent at or above it (for tails)
        const double n = static_cast<double>(v.size());
        for (size_t i = 0; i < v.size(); i += step)
            f << v[i] / scale << " " << 100.0 * static_cast<double>(i + 1) / n << " "
              << 100.0 * static_cast<double>(v.size() - i) / n << "\n";
        f << v.back() / scale << " 100 " << 100.0 / n << "\n\n\n";
        titles.push_back(subj);
    }
}

std::string plot_lines(const std::string& dat, const std::vector<std::string>& titles,
                       const std::string& style, const std::string& columns = "1:2") {
    std::string s = "plot ";
    for (size_t i = 0; i < titles.size(); ++i) {
        if (i)
            s += ", \\\n     ";
        s += "'" + dat + "' index " + std::to_string(i) + " using " + columns + " with " + style +
             " lw 2 title '" + titles[i] + "'";
    }
    return s + "\n";
}

const char* svg_head =
    "set terminal svg size 900,540 dynamic font 'sans,12' background rgb 'white'\n"
    "set termoption noenhanced\n"
    "set grid\n"
    // Ten colours that stay apart on white (gnuplot's fifth default is a pale yellow).
    "set linetype 1 lc rgb '#000000'\nset linetype 2 lc rgb '#d62728'\n"
    "set linetype 3 lc rgb '#1f77b4'\nset linetype 4 lc rgb '#2ca02c'\n"
    "set linetype 5 lc rgb '#9467bd'\nset linetype 6 lc rgb '#ff7f0e'\n"
    "set linetype 7 lc rgb '#8c564b'\nset linetype 8 lc rgb '#e377c2'\n"
    "set linetype 9 lc rgb '#17becf'\nset linetype 10 lc rgb '#7f7f7f'\n";

void write_plots(const options& opt, const results& res, const std::vector<std::string>& subjects) {
    std::ofstream gp(opt.out + "/plots.gp");
    gp << "# gnuplot " << opt.out << "/plots.gp, run from " << opt.out << "\n" << svg_head;
    struct cdf_plot {
        std::string key, file, title, xlabel;
        bool tail;  // plot the share of samples at or above x, log scale: the slow end
    };
    std::vector<cdf_plot> cdfs{
        {"lat_fork", "latency_fork", "exit -> notice, fork/_exit children",
         "microseconds from the child's last stamp to the callback (log)", false},
        {"lat_exec", "latency_exec", "exit -> notice, exec'd children",
         "microseconds from the child's last stamp to the callback (log)", false},
        {"load_storm", "load_storm",
         "REQ/REP round trip while " + std::to_string(opt.p.load_children) + " children exit",
         "round trip, microseconds (log)", true},
    };
    for (const auto& c : cdfs) {
        std::vector<std::string> titles;
        write_cdf(opt.out + "/" + c.file + ".dat", res, c.key, subjects, 1e3, titles);
        if (titles.empty())
            continue;
        gp << "\nset output '" << c.file << ".svg'\n";
        if (c.tail)
            gp << "set title \"" << c.title << ": the slow end\"\n"
               << "set logscale x\nset logscale y\nset yrange [*:100]\nset key top right\n"
               << "set xlabel \"" << c.xlabel << "\"\n"
               << "set ylabel 'percent of samples at or above (log)'\n"
               << plot_lines(c.file + ".dat", titles, "lines", "1:3");
        else
            gp << "set title \"" << c.title << ": cumulative distribution\"\n"
               << "set logscale x\nunset logscale y\nset yrange [0:100]\nset key bottom right\n"
               << "set xlabel \"" << c.xlabel << "\"\n"
               << "set ylabel 'percent of samples at or below'\n"
               << plot_lines(c.file + ".dat", titles, "lines");
    }
    // Latency against the number of live children.
    std::vector<int> ks;
    for (const auto& key : res.key_order)
        if (key.rfind("scale_", 0) == 0)
            ks.push_back(std::stoi(key.substr(6)));
    std::sort(ks.begin(), ks.end());
    if (!ks.empty()) {
        for (const char* which : {"p50", "p99"}) {
            std::string file = std::string("scaling_") + which;
            std::ofstream f(opt.out + "/" + file + ".dat");
            std::vector<std::string> titles;
            for (const auto& subj : subjects) {
                bool any = false;
                for (int k : ks) {
                    auto kit = res.samples.find("scale_" + std::to_string(k));
                    if (kit == res.samples.end())
                        continue;
                    auto it = kit->second.find(subj);
                    if (it == kit->second.end())
                        continue;
                    stats s = compute(it->second);
                    if (!any)
                        f << "# " << subj << "\n";
                    any = true;
                    f << k << " " << (std::string(which) == "p50" ? s.p50 : s.p99) / 1e3 << "\n";
                }
                if (any) {
                    f << "\n\n";
                    titles.push_back(subj);
                }
            }
            gp << "\nset output '" << file << ".svg'\n"
               << "set title 'exit -> notice " << which << " against children alive and watched'\n"
               << "set logscale x\nset logscale y\nset autoscale y\nset key top left\n"
               << "set xlabel 'other children alive and watched (log)'\n"
               << "set ylabel '" << which << " microseconds (log)'\n"
               << plot_lines(file + ".dat", titles, "linespoints");
        }
    }
    gp.close();
    std::string cmd = "cd '" + opt.out + "' && gnuplot plots.gp";
    if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
        std::cerr << "gnuplot not found: plots not drawn (their data and script are in " << opt.out
                  << ")\n";
        return;
    }
    if (std::system(cmd.c_str()) != 0)
        std::cerr << "gnuplot failed: " << cmd << "\n";
}

void write_samples(const options& opt, const results& res) {
    std::ofstream f(opt.out + "/samples.csv");
    f << "key,subject,round,value\n";
    for (const auto& [ks, v] : res.raw) {
        auto bar = ks.find('|');
        for (const auto& [round, x] : v)
            f << ks.substr(0, bar) << "," << ks.substr(bar + 1) << "," << round << "," << x << "\n";
    }
}

std::string machine_description() {
    utsname u{};
    ::uname(&u);
    std::string cpu;
    std::ifstream ci("/proc/cpuinfo");
    std::string line;
    while (std::getline(ci, line))
        if (line.rfind("model name", 0) == 0) {
            cpu = line.substr(line.find(':') + 2);
            break;
        }
    return std::string(u.sysname) + " " + u.release + " " + u.machine + ", nproc " +
           std::to_string(::sysconf(_SC_NPROCESSORS_ONLN)) + (cpu.empty() ? "" : ", " + cpu);
}

std::string utc_now() {
    std::time_t t = std::time(nullptr);
    char b[64];
    std::strftime(b, sizeof b, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
    return b;
}

void usage() {
    std::cout <<
        R"(usage: zreap-bench [--all | --quick | --smoke] [options]

Every compiled zreap backend against a blocking waitpid (the floor) and against the peer
libraries' own loops (libuv, libev, GLib, sd-event, those found at configure time), each
measurement in a worker process of its own, subjects interleaved round by round.

  --all            the whole comparison (default; a few minutes)
  --crowd          1000, 10,000 and 20,000 live children (latency, memory per child) and the
                   crowd row: 20,000 watched under a soft RLIMIT_NOFILE of 1024 (10-20 min);
                   add --subjects floor,zreap:default,zreap:io_uring for the crowd alone
  --quick          fewer samples, K up to 1000 (under a minute)
  --smoke          a few samples of everything: checks that the harness runs
  --out DIR        where the CSV files, plot data and SVG plots go (default bench-out)
  --rounds N       rounds of interleaved measurements
  --subjects LIST  comma-separated subset: floor, zreap:<backend>, libuv, libev, glib, sd-event
  --scenarios LIST comma-separated subset: lat_fork, lat_exec, tput, scale, idle, load
  --samples N      latency samples per subject and round
  --throughput-children N, --in-flight N
  --live LIST      numbers of live children for the scaling rows (default 1,100,1000,4096)
  --crowd-children N, --crowd-nofile N   the crowd row's children and soft RLIMIT_NOFILE
  --load-children N
  --no-plots       skip gnuplot
)";
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (!args.empty() && args[0] == "--worker") {
        if (args.size() < 3) {
            std::cerr << "--worker SUBJECT SCENARIO [key=value...]\n";
            return 2;
        }
        try {
            params p = params::from_args({args.begin() + 3, args.end()});
            return bench::run_worker(args[1], args[2], p,
                                     dir_of(self_exe()) + "/zreap-bench-child");
        } catch (const std::exception& e) {
            std::cerr << "worker " << args[1] << " " << args[2] << ": " << e.what() << "\n";
            return 1;
        }
    }

    options opt;
    opt.p.live = {1, 100, 1000, 4096};
    std::vector<std::string> overrides;
    try {
        for (size_t i = 0; i < args.size(); ++i) {
            const std::string& a = args[i];
            auto next = [&]() -> std::string {
                if (i + 1 >= args.size())
                    throw std::runtime_error(a + " needs a value");
                return args[++i];
            };
            if (a == "--all" || a == "--quick" || a == "--smoke" || a == "--crowd")
                opt.mode = a.substr(2);
            else if (a == "--help" || a == "-h") {
                usage();
                return 0;
            } else {
                overrides.push_back(a);
                if (a != "--no-plots")
                    overrides.push_back(next());
            }
        }
        if (opt.mode == "all") {
            // Many short rounds rather than a few long ones: a noisy neighbour then lands on
            // every subject's samples alike. The latency rows are cheap, so they get all six;
            // the costly rows fewer.
            opt.rounds = 6;
            opt.p.latency_samples = 100;
            opt.p.scale_samples = 100;
            opt.max_rounds["scale"] = 1;
            opt.max_rounds["tput"] = 3;
            opt.max_rounds["load"] = 2;
        } else if (opt.mode == "quick") {
            opt.rounds = 2;
            opt.p.latency_samples = 30;
            opt.p.throughput_children = 300;
            opt.p.live = {1, 100, 1000};
            opt.p.scale_samples = 30;
            opt.p.idle_ms = 200;
            opt.p.load_children = 300;
            opt.p.load_warmup = 100;
            opt.max_rounds["scale"] = 1;
            opt.max_rounds["load"] = 1;
        } else if (opt.mode == "crowd") {
            // The scaling rows at 1000, 10,000 and 20,000 live children (memory included),
            // and the crowd row: separate from --all, since 20,000 children take minutes to
            // start and release for every subject.
            opt.rounds = 1;
            opt.p.live = {1000, 10000, 20000};
            opt.p.scale_samples = 50;
            opt.scenarios = {"scale", "crowd"};
            opt.worker_timeout_s = 900;
        } else if (opt.mode == "smoke") {
            opt.rounds = 1;
            opt.p.latency_samples = 3;
            opt.p.delay_us = 200;
            opt.p.throughput_children = 20;
            opt.p.in_flight = 5;
            opt.p.live = {1, 10};
            opt.p.scale_samples = 2;
            opt.p.idle_ms = 50;
            opt.p.load_children = 10;
            opt.p.load_warmup = 5;
            opt.worker_timeout_s = 60;
        }
        for (size_t i = 0; i < overrides.size(); ++i) {
            const std::string& a = overrides[i];
            if (a == "--no-plots") {
                opt.plots = false;
                continue;
            }
            const std::string& v = overrides[++i];
            if (a == "--out")
                opt.out = v;
            else if (a == "--rounds")
                opt.rounds = std::stoi(v);
            else if (a == "--subjects")
                opt.subjects = split(v);
            else if (a == "--scenarios")
                opt.scenarios = split(v);
            else if (a == "--samples")
                opt.p.latency_samples = opt.p.scale_samples = std::stoi(v);
            else if (a == "--throughput-children")
                opt.p.throughput_children = std::stoi(v);
            else if (a == "--in-flight")
                opt.p.in_flight = std::stoi(v);
            else if (a == "--live")
                opt.p.live = bench::parse_ints(v);
            else if (a == "--crowd-children")
                opt.p.crowd = std::stoi(v);
            else if (a == "--crowd-nofile")
                opt.p.crowd_nofile = std::stoi(v);
            else if (a == "--load-children")
                opt.p.load_children = std::stoi(v);
            else
                throw std::runtime_error("unknown option " + a);
        }
    } catch (const std::exception& e) {
        std::cerr << "zreap-bench: " << e.what() << "\n";
        usage();
        return 2;
    }

    // Every compiled backend: those that arrive in later builds appear here by themselves.
    std::vector<std::string> subjects{"floor"};
    if (opt.mode == "crowd")
        subjects.push_back("zreap:default");  // zreap::loop{}, as most programs make it
    for (zreap::backend b : zreap::compiled_backends())
        subjects.push_back("zreap:" + std::string(zreap::to_string(b)));
    for (const auto& peer : bench::compiled_peers())
        subjects.push_back(peer);
    if (!opt.subjects.empty()) {
        std::vector<std::string> keep;
        for (const auto& s : subjects)
            if (s == "floor" ||
                std::find(opt.subjects.begin(), opt.subjects.end(), s) != opt.subjects.end())
                keep.push_back(s);
        subjects = keep;
    }
    std::vector<std::string> scenarios = bench::scenario_names();
    if (!opt.scenarios.empty())
        scenarios = opt.scenarios;

    if (std::system(("mkdir -p '" + opt.out + "'").c_str()) != 0) {
        std::cerr << "cannot create " << opt.out << "\n";
        return 1;
    }
    std::string command = "zreap-bench";
    for (const auto& a : args)
        command += " " + a;
    const std::string started = utc_now();
    const std::string load_before = read_file("/proc/loadavg");
    std::cerr << "zreap-bench " << opt.mode << ": " << subjects.size() << " subjects, "
              << opt.rounds << " rounds, results in " << opt.out << "\n";

    results res;
    const auto t_start = std::chrono::steady_clock::now();
    for (int round = 0; round < opt.rounds; ++round) {
        for (const auto& sc : scenarios) {
            if (auto m = opt.max_rounds.find(sc); m != opt.max_rounds.end() && round >= m->second)
                continue;
            // Rotate the order every round so no subject always runs first or last.
            for (size_t i = 0; i < subjects.size(); ++i) {
                const auto& subj = subjects[(i + static_cast<size_t>(round)) % subjects.size()];
                auto t0 = std::chrono::steady_clock::now();
                run_one(opt, subj, sc, round, res);
                double secs =
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                std::fprintf(stderr, "  round %d/%d %-8s %-16s %6.2f s\n", round + 1, opt.rounds,
                             sc.c_str(), subj.c_str(), secs);
            }
        }
    }
    sort_keys(res.key_order);
    const double total_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();

    std::ostringstream head;
    head << "zreap-bench " << opt.mode << ", " << started << "\n"
         << "machine: " << machine_description() << "\n"
         << "load average before: " << load_before << "; after: " << read_file("/proc/loadavg")
         << "\n"
         << "command: " << command << "\n"
         << "rounds: " << opt.rounds << ", total " << fmt(total_s) << " s; ratios are to the floor "
         << "(blocking waitpid, no loop) measured in the same run\n";
    std::ofstream csv(opt.out + "/summary.csv");
    std::ostringstream table;
    print_table(opt, res, subjects, table, csv);
    std::cout << head.str() << table.str();
    std::ofstream(opt.out + "/summary.txt") << head.str() << table.str();
    write_samples(opt, res);
    if (opt.plots)
        write_plots(opt, res, subjects);

    if (opt.mode == "smoke") {
        // The smoke run checks the harness, not the numbers: every subject must have produced
        // samples (or said why not) and no worker may have failed.
        for (const auto& subj : subjects) {
            bool any = false;
            for (const auto& [key, by] : res.samples)
                any = any || by.count(subj);
            if (!any && !res.notes.count(subj)) {
                std::cerr << "smoke: " << subj << " produced nothing\n";
                return 1;
            }
        }
    }
    return res.failures == 0 ? 0 : 1;
}
