// zreap-wait-costs: where the time between a child's exit and a loop's callback goes, with
// clock stamps (docs/performance.md, "Where the time goes").
//   1. exit -> return of the waiting call: blocking waitpid, poll on the pidfd, poll on an
//      epoll fd holding the pidfd, zmq_poll on that epoll fd;
//   2. the pidfd backend's calls after the wakeup (epoll_wait, waitid, epoll_ctl DEL);
//   3. waitid(P_ALL, WNOWAIT), the signal backends' peek, against waitid(P_PID) with K live
//      children.
// Usage: zreap-wait-costs [samples per wait kind, default 100]

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "probe_children.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

double median_us(std::vector<double> v) {
    if (v.empty())
        return 0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2] / 1e3;
}

volatile std::int64_t* shm;

}  // namespace

int main(int argc, char** argv) {
    const int n = argc > 1 ? std::atoi(argv[1]) : 100;
    void* m = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return 1;
    shm = static_cast<volatile std::int64_t*>(m);

    std::vector<double> waitpid_us, poll_pidfd, poll_epoll, zmq_poll_epoll, after_wake;
    for (int i = 0; i < 4 * n; ++i) {
        const int kind = i % 4;  // interleaved, so that the machine's noise hits all alike
        pid_t pid = probe::stamping_child(shm);
        int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
        int ep = ::epoll_create1(EPOLL_CLOEXEC);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ::epoll_ctl(ep, EPOLL_CTL_ADD, pidfd, &ev);
        if (kind == 0) {
            int st;
            while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
            }
            waitpid_us.push_back(static_cast<double>(probe::now_ns() - *shm));
        } else {
            if (kind == 1) {
                pollfd p{pidfd, POLLIN, 0};
                ::poll(&p, 1, -1);
                poll_pidfd.push_back(static_cast<double>(probe::now_ns() - *shm));
            } else if (kind == 2) {
                pollfd p{ep, POLLIN, 0};
                ::poll(&p, 1, -1);
                poll_epoll.push_back(static_cast<double>(probe::now_ns() - *shm));
            } else {
                zmq_pollitem_t item{nullptr, ep, ZMQ_POLLIN, 0};
                zmq_poll(&item, 1, -1);
                zmq_poll_epoll.push_back(static_cast<double>(probe::now_ns() - *shm));
            }
            std::int64_t t0 = probe::now_ns();
            epoll_event out[64];
            ::epoll_wait(ep, out, 64, 0);
            siginfo_t si{};
            ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &si,
                     WEXITED | WNOHANG);
            ::epoll_ctl(ep, EPOLL_CTL_DEL, pidfd, nullptr);
            after_wake.push_back(static_cast<double>(probe::now_ns() - t0));
        }
        ::close(pidfd);
        ::close(ep);
    }
    std::printf(
        "exit -> wake, median us: waitpid %.1f | poll(pidfd) %.1f | poll(epoll{pidfd}) %.1f"
        " | zmq_poll(epoll{pidfd}) %.1f\n",
        median_us(waitpid_us), median_us(poll_pidfd), median_us(poll_epoll),
        median_us(zmq_poll_epoll));
    std::printf("after the wake: epoll_wait + waitid(P_PIDFD) + epoll_ctl(DEL), median %.1f us\n",
                median_us(after_wake));

    for (int k : {1, 100, 1000, 4096}) {
        int gate[2];
        if (::pipe2(gate, O_CLOEXEC) != 0)
            return 1;
        const std::vector<pid_t> live = probe::gated_children(k, gate[0]);
        ::close(gate[0]);
        std::vector<double> all, one;
        for (int i = 0; i < 200 && !live.empty(); ++i) {
            siginfo_t si{};
            std::int64_t t0 = probe::now_ns();
            ::waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT);
            std::int64_t t1 = probe::now_ns();
            ::waitid(P_PID, static_cast<id_t>(live[static_cast<size_t>(i) % live.size()]), &si,
                     WEXITED | WNOHANG | WNOWAIT);
            std::int64_t t2 = probe::now_ns();
            all.push_back(static_cast<double>(t1 - t0));
            one.push_back(static_cast<double>(t2 - t1));
        }
        std::printf(
            "%5zu live children: waitid(P_ALL, WNOWAIT) %.2f us, waitid(P_PID, WNOWAIT)"
            " %.2f us (medians)\n",
            live.size(), median_us(all), median_us(one));
        ::close(gate[1]);
        for (pid_t p : live) {
            int st;
            while (::waitpid(p, &st, 0) < 0 && errno == EINTR) {
            }
        }
    }
    return 0;
}
