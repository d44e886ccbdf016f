// zreap-waitid-queue: what pending IORING_OP_WAITID requests cost every child exit of the
// process (docs/backends/io_uring.md, "What it costs"). Each request waits on the process's
// one child-exit wait queue, and the kernel calls every waiter of that queue on each exit of
// any child. For K live children, the latency from a child's exit to the return of a
// blocking waitpid on it (a fork child that sleeps 1 ms, stamps and exits) is measured with
// no request pending and with K WAITIDs pending on the K live children, in alternating
// blocks of ten samples; then the time for all K to be reported once they are released.
// First, the io_uring backend's choice between reaping in the WAITID and WNOWAIT plus a
// waitid of its own: exit -> reaped, through the ring fd and poll, both ways, against a
// blocking waitpid, interleaved sample by sample.
// Usage: zreap-waitid-queue [samples per case, default 100] [K,K,... default 0,1000,4000,10000]

#include <liburing.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>
#include <vector>

#include "backends/io_uring/waitid_sqe.hpp"
#include "probe_children.hpp"

namespace {

double percentile_us(std::vector<double> v, double q) {
    if (v.empty())
        return 0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))] /
           1e3;
}

volatile std::int64_t* shm;

void submit_all(io_uring& ring) {
    while (io_uring_submit(&ring) == -EINTR) {
    }
}

void wait_for(pid_t pid) {
    int st;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
}

double one_exit() {
    wait_for(probe::stamping_child(shm));
    return static_cast<double>(probe::now_ns() - *shm);
}

// One exit noticed through @p ring: a WAITID with @p options, poll on the ring fd, the
// completion read, and with WNOWAIT the reaping waitid.
double one_exit_through(io_uring& ring, int options) {
    const pid_t p = probe::stamping_child(shm);
    siginfo_t si{};
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    zreap::detail::prep_waitid(sqe, p, &si, options);
    io_uring_sqe_set_data64(sqe, 1);
    submit_all(ring);
    pollfd pfd{ring.ring_fd, POLLIN, 0};
    while (::poll(&pfd, 1, -1) < 0 && errno == EINTR) {
    }
    io_uring_cqe* cqe;
    while (io_uring_peek_cqe(&ring, &cqe) == 0)
        io_uring_cqe_seen(&ring, cqe);
    if (options & WNOWAIT) {
        siginfo_t reaped{};
        while (::waitid(P_PID, static_cast<id_t>(p), &reaped, WEXITED | WNOHANG) < 0 &&
               errno == EINTR) {
        }
    }
    return static_cast<double>(probe::now_ns() - *shm);
}

// Submits a WNOWAIT WAITID for every pid in @p live (their siginfos in @p si).
void arm(io_uring& ring, const std::vector<pid_t>& live, std::deque<siginfo_t>& si) {
    for (std::size_t i = 0; i < live.size(); ++i) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);
        if (!sqe) {
            submit_all(ring);
            sqe = io_uring_get_sqe(&ring);
        }
        zreap::detail::prep_waitid(sqe, live[i], &si[i], WEXITED | WNOWAIT);
        io_uring_sqe_set_data64(sqe, i + 1);
    }
    submit_all(ring);
}

// Cancels every pending request and reads every completion.
void disarm(io_uring& ring, std::size_t pending) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    if (!sqe) {
        submit_all(ring);
        sqe = io_uring_get_sqe(&ring);
    }
    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, 0);
    submit_all(ring);
    while (pending > 0) {
        io_uring_cqe* cqe;
        if (io_uring_wait_cqe(&ring, &cqe) != 0)
            continue;
        if (cqe->user_data != 0)
            --pending;
        io_uring_cqe_seen(&ring, cqe);
    }
}

}  // namespace

int main(int argc, char** argv) {
    const int n = argc > 1 ? std::atoi(argv[1]) : 100;
    std::vector<int> ks{0, 1000, 4000, 10000};
    if (argc > 2) {
        ks.clear();
        std::string s = argv[2];
        for (std::size_t pos = 0; pos < s.size();) {
            std::size_t end = s.find(',', pos);
            if (end == std::string::npos)
                end = s.size();
            ks.push_back(std::atoi(s.substr(pos, end - pos).c_str()));
            pos = end + 1;
        }
    }
    void* m = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return 1;
    shm = static_cast<volatile std::int64_t*>(m);
    rlimit rl{};
    ::getrlimit(RLIMIT_NPROC, &rl);
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NPROC, &rl);

    io_uring ring;
    io_uring_params params{};
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = 4096;
    if (int rc = io_uring_queue_init_params(128, &ring, &params); rc < 0) {
        std::fprintf(stderr, "io_uring_setup: %d\n", rc);
        return 1;
    }
    {
        std::vector<double> floor, nowait, reaping;
        for (int i = 0; i < n; ++i) {
            for (int j = 0; j < 3; ++j) {  // rotated, so that no kind always goes first
                switch ((i + j) % 3) {
                    case 0:
                        floor.push_back(one_exit());
                        break;
                    case 1:
                        nowait.push_back(one_exit_through(ring, WEXITED | WNOWAIT));
                        break;
                    default:
                        reaping.push_back(one_exit_through(ring, WEXITED));
                        break;
                }
            }
        }
        const double f = percentile_us(floor, 0.5);
        std::printf(
            "exit -> reaped, p50: blocking waitpid %.1f us | WAITID with WNOWAIT + waitid "
            "%.1f us (%.3fx) | WAITID that reaps %.1f us (%.3fx)\n\n",
            f, percentile_us(nowait, 0.5), percentile_us(nowait, 0.5) / f,
            percentile_us(reaping, 0.5), percentile_us(reaping, 0.5) / f);
    }
    std::printf("%6s  %-28s  %-28s  %s\n", "K", "no WAITID: p50 / p99 us",
                "K WAITIDs: p50 / p99 us", "all K released: reported after ms");
    for (int k : ks) {
        int gate[2];
        if (::pipe2(gate, O_CLOEXEC) != 0)
            return 1;
        const std::vector<pid_t> live = probe::gated_children(k, gate[0]);
        ::close(gate[0]);
        std::deque<siginfo_t> si(live.size());
        std::vector<double> bare, queued;
        for (int block = 0; block < 2 * ((n + 9) / 10); ++block) {
            const bool with = block % 2 == 1;
            if (with)
                arm(ring, live, si);
            for (int i = 0; i < 10; ++i)
                (with ? queued : bare).push_back(one_exit());
            if (with)
                disarm(ring, live.size());
        }
        // Every live child released at once, each with its WAITID pending: until the last
        // completion has arrived and its child is reaped.
        arm(ring, live, si);
        const std::int64_t t0 = probe::now_ns();
        ::close(gate[1]);
        std::size_t done = 0;
        while (done < live.size()) {
            io_uring_cqe* cqe;
            if (io_uring_wait_cqe(&ring, &cqe) != 0)
                continue;
            siginfo_t out{};
            const std::size_t i = cqe->user_data - 1;
            if (cqe->res == 0)
                ::waitid(P_PID, static_cast<id_t>(live[i]), &out, WEXITED);
            io_uring_cqe_seen(&ring, cqe);
            ++done;
        }
        const double release_ms = static_cast<double>(probe::now_ns() - t0) / 1e6;
        std::printf("%6zu  %8.1f / %-17.1f  %8.1f / %-17.1f  %.1f\n", live.size(),
                    percentile_us(bare, 0.5), percentile_us(bare, 0.99), percentile_us(queued, 0.5),
                    percentile_us(queued, 0.99), release_ms);
        std::fflush(stdout);
    }
    io_uring_queue_exit(&ring);
    return 0;
}
