// io_uring backend: one io_uring instance per loop, one pending IORING_OP_WAITID per watched
// child, and the ring's fd in the poll set. No fd per child, no signal, no epoll
// registration: a child's exit completes its WAITID, the completion makes the ring fd
// readable, and the completions are read from the shared completion queue without a system
// call.
//
// Each WAITID is submitted with WNOWAIT: its completion only says "this child is a zombie
// now", and reap() then reaps it with a waitid(P_PID, WNOHANG) of its own. So a WAITID that
// completes while unwatch() is cancelling it has reaped nothing: the child stays waitable
// for other code, as loop::remove() promises, and a late completion is simply dropped.
//
// What this costs with many children: every pending WAITID sits on the process's one
// child-exit wait queue, and the kernel walks that whole queue, under the global
// tasklist_lock, on every exit of any child of the process. See docs/backends/io_uring.md
// for the measurement; that cost is why "auto" does not choose this backend.
//
// Kernel: IORING_OP_WAITID needs Linux 6.7. liburing: any version; io_uring_prep_waitid is
// used where liburing has it (2.5 and later), otherwise prep_waitid() below fills the SQE
// from the kernel ABI.

#include <liburing.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/child_watcher.hpp"
#include "core/error.hpp"
#include "core/waitid_linux.hpp"
#include "waitid_sqe.hpp"

namespace zreap::detail {

namespace {

// A forked child inherits the loop object and the ring's shared mappings. Writing a
// submission there would put it in the parent's ring, so a watcher notices that it is in
// another process by this count, which the child side of every fork() increments.
std::atomic<unsigned> forks{0};

void count_fork() noexcept {
    forks.fetch_add(1, std::memory_order_relaxed);
}

void register_fork_counter() {
    static std::once_flag once;
    std::call_once(once, [] {
        if (int rc = ::pthread_atfork(nullptr, nullptr, count_fork); rc != 0)
            throw_errno(rc, "zreap io_uring backend: pthread_atfork");
    });
}

// Debian's liburing maps and unmaps the rings with its own system call stubs, which
// ThreadSanitizer does not see. A ring mapped where another thread's unmapped ring was would
// inherit that ring's memory history, and its first use would be reported as a race with
// the other thread. The kernel orders the unmap before the new map; this counter makes that
// order visible: a release when a ring goes, an acquire when one comes. One atomic
// operation per ring set up or torn down.
std::atomic<unsigned> rings_unmapped{0};

void ring_mapped() noexcept {
    (void)rings_unmapped.load(std::memory_order_acquire);
}

void unmap_ring(io_uring& ring) noexcept {
    rings_unmapped.fetch_add(1, std::memory_order_release);
    io_uring_queue_exit(&ring);
}

// The reap is a waitid of our own (core/waitid_linux.hpp) rather than the WAITID request's,
// which cannot report the child's resource usage.

// Submission-queue and completion-queue sizes. The SQ only bounds how many submissions go
// in per io_uring_enter (more are submitted in several calls); the CQ holds completions not
// yet read, and the kernel keeps any overflow in a list of its own (IORING_FEAT_NODROP,
// Linux 5.5), which liburing flushes when the CQ is empty again. 16 KiB of CQ.
constexpr unsigned sq_entries = 128;
constexpr unsigned cq_entries = 1024;

// The user_data of requests whose completion means nothing (cancellations).
constexpr std::uint64_t ignored_tag = ~std::uint64_t{0};

class io_uring_watcher final : public child_watcher {
  public:
    io_uring_watcher() {
        register_fork_counter();
        io_uring_params p{};
        p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
        p.cq_entries = cq_entries;
        if (int rc = io_uring_queue_init_params(sq_entries, &ring_, &p); rc < 0)
            throw_errno(-rc, "zreap io_uring backend: io_uring_setup");
        ring_mapped();
        forks_at_start_ = forks.load(std::memory_order_relaxed);
    }

    ~io_uring_watcher() override {
        if (!forked())
            drain_before_exit();
        // In a forked child this only unmaps and closes this process's copy; the parent's
        // ring and requests are untouched.
        unmap_ring(ring_);
    }

    int wake_fd() const noexcept override { return ring_.ring_fd; }

    // @p exited needs nothing special: a WAITID for a child that is a zombie already
    // completes as it is submitted, before the poll.
    void watch(pid_t pid, int, bool) override {
        if (forked())
            refuse_in_fork("watch_child(" + std::to_string(pid) + ")");
        // Room for this child's cancellation and submission, so that unwatch() and reap()
        // never allocate.
        reserve(to_submit_, to_submit_.size() + 1);
        std::uint32_t i;
        if (!free_.empty()) {
            i = free_.back();
        } else {
            slots_.emplace_back();
            i = static_cast<std::uint32_t>(slots_.size() - 1);
            free_.reserve(slots_.size());
            free_.push_back(i);
            // Every slot is at most once among the cancellations.
            reserve(to_cancel_, slots_.size());
        }
        by_pid_.emplace(pid, i);  // may throw: nothing changed yet
        free_.pop_back();
        slot& s = slots_[i];
        s.pid = pid;
        ++s.gen;
        s.st = state::watched;
        s.in_kernel = false;
        to_submit_.push_back(i);
    }

    void unwatch(pid_t pid) noexcept override {
        if (forked())
            return;
        auto it = by_pid_.find(pid);
        if (it == by_pid_.end())
            return;
        const std::uint32_t i = it->second;
        slot& s = slots_[i];
        by_pid_.erase(it);
        if (s.in_kernel) {
            // The slot stays taken until the WAITID's completion arrives: the kernel may
            // still write its siginfo.
            s.st = state::cancelled;
            to_cancel_.push_back(user_data(i, s));  // capacity reserved in watch()
        } else {
            release(s, i);  // its queued submission is skipped
        }
    }

    // Submits the WAITIDs of children watched since the last poll and the cancellations of
    // those removed, in as few io_uring_enter calls as the SQ allows (usually one).
    bool wants_immediate_poll() noexcept override {
        if (forked())
            return false;
        if (flush())
            return false;
        more_ = true;  // reap() reads completions even if the ring fd did not wake the poll
        return true;
    }

    bool reap(const poll_result& r, std::vector<exit_status>& out, std::size_t max) override {
        if (!r.woken && !more_)
            return false;
        if (forked())
            refuse_in_fork("reap");
        const std::size_t limit = out.size() + max;
        // Every watched child may have to be submitted again (resubmit() never allocates).
        reserve(to_submit_, to_submit_.size() + by_pid_.size());
        std::exception_ptr error;  // the first failure; the rest of the batch is still reaped
        more_ = false;
        io_uring_cqe* cqe;
        // io_uring_peek_cqe reads the shared CQ; it enters the kernel only to flush
        // completions that overflowed the CQ.
        while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
            if (out.size() >= limit) {
                more_ = true;
                break;
            }
            const std::uint64_t ud = cqe->user_data;
            const int res = cqe->res;
            io_uring_cqe_seen(&ring_, cqe);
            if (ud == ignored_tag)
                continue;
            const std::uint32_t i = static_cast<std::uint32_t>(ud);
            if (i >= slots_.size())
                continue;
            slot& s = slots_[i];
            if (!s.in_kernel || s.gen != static_cast<std::uint32_t>(ud >> 32))
                continue;
            s.in_kernel = false;
            --in_kernel_;
            if (s.st == state::cancelled) {
                release(s, i);
                continue;
            }
            try {
                completed(i, res, out);
            } catch (...) {
                if (!error)
                    error = std::current_exception();
            }
        }
        // One child that cannot be reaped does not hold back the others of the batch: they
        // are in @p out, which the loop keeps when this throws.
        if (error)
            std::rethrow_exception(error);
        return more_;
    }

  private:
    enum class state : std::uint8_t { free, watched, cancelled };

    struct slot {
        siginfo_t si{};  // written by the kernel when the WAITID completes
        pid_t pid = 0;
        std::uint32_t gen = 0;  // tells this watch from earlier ones of the same slot
        state st = state::free;
        bool in_kernel = false;  // a WAITID for it was submitted and has not completed
    };

    static std::uint64_t user_data(std::uint32_t i, const slot& s) noexcept {
        return (static_cast<std::uint64_t>(s.gen) << 32) | i;
    }

    template <typename T>
    static void reserve(std::vector<T>& v, std::size_t n) {
        if (v.capacity() < n)
            v.reserve(std::max(n, 2 * v.capacity()));
    }

    bool forked() const noexcept {
        return forks.load(std::memory_order_relaxed) != forks_at_start_;
    }

    [[noreturn]] static void refuse_in_fork(const std::string& what) {
        throw_errno(EPERM, "zreap io_uring backend: " + what +
                               ": this loop belongs to the process that made it, not to a "
                               "child forked from it; make a new loop in the child");
    }

    void release(slot& s, std::uint32_t i) noexcept {
        s.st = state::free;
        s.pid = 0;
        free_.push_back(i);  // capacity: one entry per slot
    }

    // The WAITID of watched slot @p i completed with @p res. Whatever it says, the child's
    // own waitid decides: with WNOWAIT the request reaped nothing, so the child is still
    // there to ask.
    //
    // res 0 is the usual case: the child is a zombie now. The others come from the kernel
    // ending a request itself. A request belongs to the thread that submitted it, and when
    // that thread exits the kernel ends it: measured on 6.18 (tests/io_uring_test.cpp), with
    // ECANCELED, EFAULT (writing the siginfo without the thread's memory; s.si itself is
    // always valid) or ECHILD (the retry no longer runs as the children's parent). An ECHILD
    // is also what a child reaped by other code gives (waitpid(-1) elsewhere, SIGCHLD set to
    // SIG_IGN since), and the waitid below tells the two apart.
    void completed(std::uint32_t i, int res, std::vector<exit_status>& out) {
        slot& s = slots_[i];
        siginfo_t si{};
        struct rusage ru {};
        if (out.size() == out.capacity())  // room before the reap: push_back cannot throw
            out.reserve(2 * out.size() + 8);
        if (waitid_with_usage(P_PID, static_cast<id_t>(s.pid), &si, WEXITED | WNOHANG, &ru) == 0) {
            if (si.si_pid == s.pid) {
                exit_status st = exit_status::from_siginfo(si);
                st.set_usage(ru);
                out.push_back(st);
                forget(i);
                return;
            }
            // Still running: wait for it again.
            resubmit(i);
            if (res == 0 || res == -ECHILD || res == -ECANCELED || res == -EINTR || res == -EFAULT)
                return;
            throw_errno(-res,
                        "zreap io_uring backend: IORING_OP_WAITID(" + std::to_string(s.pid) + ")");
        }
        if (errno == ECHILD) {
            // Something else reaped our child. Its status is gone; report that rather
            // than nothing.
            out.push_back(exit_status::from_wait_status(s.pid, exit_status::unknown_raw));
            forget(i);
            return;
        }
        resubmit(i);
        throw_errno("zreap io_uring backend: waitid(P_PID, " + std::to_string(s.pid) + ")");
    }

    void resubmit(std::uint32_t i) noexcept {
        to_submit_.push_back(i);  // capacity reserved in reap()
    }

    void forget(std::uint32_t i) noexcept {
        by_pid_.erase(slots_[i].pid);
        release(slots_[i], i);
    }

    // An SQE, submitting what is queued to make room if the SQ is full; nullptr if that
    // fails (the kernel refuses more work until completions are read).
    io_uring_sqe* next_sqe() noexcept {
        if (io_uring_sqe* sqe = io_uring_get_sqe(&ring_))
            return sqe;
        if (submit() < 0)
            return nullptr;
        return io_uring_get_sqe(&ring_);
    }

    int submit() noexcept {
        int rc;
        while ((rc = io_uring_submit(&ring_)) == -EINTR) {
        }
        return rc;
    }

    // False if something could not be submitted yet (the loop then polls without blocking
    // and reap() reads completions, which makes room).
    bool flush() noexcept {
        if (to_cancel_.empty() && to_submit_.empty() && !unsubmitted_)
            return true;
        std::size_t c = 0, w = 0;
        bool full = false;
        for (; c < to_cancel_.size(); ++c) {
            io_uring_sqe* sqe = next_sqe();
            if (!sqe) {
                full = true;
                break;
            }
            io_uring_prep_cancel64(sqe, to_cancel_[c], 0);
            io_uring_sqe_set_data64(sqe, ignored_tag);
        }
        for (; !full && w < to_submit_.size(); ++w) {
            const std::uint32_t i = to_submit_[w];
            slot& s = slots_[i];
            if (s.st != state::watched || s.in_kernel)
                continue;  // removed before it was submitted
            io_uring_sqe* sqe = next_sqe();
            if (!sqe) {
                full = true;
                break;
            }
            s.si = siginfo_t{};
            prep_waitid(sqe, s.pid, &s.si, WEXITED | WNOWAIT);
            io_uring_sqe_set_data64(sqe, user_data(i, s));
            s.in_kernel = true;
            ++in_kernel_;
        }
        to_cancel_.erase(to_cancel_.begin(), to_cancel_.begin() + static_cast<std::ptrdiff_t>(c));
        to_submit_.erase(to_submit_.begin(), to_submit_.begin() + static_cast<std::ptrdiff_t>(w));
        // SQEs written but not taken by the kernel stay in the SQ for the next call.
        unsubmitted_ = submit() < 0 || io_uring_sq_ready(&ring_) > 0;
        return !full && !unsubmitted_;
    }

    // Before the ring goes: cancels every request still in the kernel and waits for each
    // one's completion, since the kernel writes a completing WAITID's siginfo into slots_.
    void drain_before_exit() noexcept {
        to_submit_.clear();
        if (in_kernel_ == 0)
            return;
        if (io_uring_sqe* sqe = next_sqe()) {
            io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
            io_uring_sqe_set_data64(sqe, ignored_tag);
        }
        submit();
        while (in_kernel_ > 0) {
            io_uring_cqe* cqe;
            __kernel_timespec ts{5, 0};
            int rc = io_uring_wait_cqe_timeout(&ring_, &cqe, &ts);
            if (rc == -EINTR)
                continue;
            if (rc < 0)
                break;
            const std::uint64_t ud = cqe->user_data;
            io_uring_cqe_seen(&ring_, cqe);
            if (ud == ignored_tag)
                continue;
            const std::uint32_t i = static_cast<std::uint32_t>(ud);
            if (i < slots_.size() && slots_[i].in_kernel &&
                slots_[i].gen == static_cast<std::uint32_t>(ud >> 32)) {
                slots_[i].in_kernel = false;
                --in_kernel_;
            }
        }
        if (in_kernel_ > 0) {
            // Never seen in practice: rather than let the kernel write into freed memory,
            // leave the slots allocated.
            std::fprintf(stderr,
                         "zreap io_uring backend: %u WAITID requests did not complete when the "
                         "loop was destroyed; their memory is left allocated\n",
                         in_kernel_);
            new std::deque<slot>(std::move(slots_));
        }
    }

    io_uring ring_{};
    unsigned forks_at_start_ = 0;
    std::deque<slot> slots_;  // a deque: a slot's siginfo keeps its address as slots are added
    std::vector<std::uint32_t> free_;
    std::unordered_map<pid_t, std::uint32_t> by_pid_;  // watched pids and their slots
    std::vector<std::uint32_t> to_submit_;             // slots whose WAITID is not submitted
    std::vector<std::uint64_t> to_cancel_;             // WAITIDs of removed children
    unsigned in_kernel_ = 0;                           // submitted, not completed
    bool unsubmitted_ = false;                         // SQEs left in the SQ by a failed submit
    bool more_ = false;
};

// Why io_uring cannot be used here, or "" if it can. Never caches: a seccomp filter or the
// sysctl can change between two calls.
std::string problem() noexcept {
    try {
        io_uring ring{};
        if (int rc = io_uring_queue_init(2, &ring, 0); rc < 0) {
            // A full fd table says nothing about the kernel: report usable, so that making
            // the loop fails with the real EMFILE.
            if (rc == -EMFILE || rc == -ENFILE)
                return "";
            std::string why = std::string("io_uring_setup failed: ") + std::strerror(-rc);
            if (std::FILE* f = std::fopen("/proc/sys/kernel/io_uring_disabled", "re")) {
                int v = -1;
                if (std::fscanf(f, "%d", &v) == 1)
                    why +=
                        " (kernel.io_uring_disabled = " + std::to_string(v) +
                        (v == 0 && (rc == -EPERM || rc == -ENOSYS) ? "; a seccomp filter?)" : ")");
                std::fclose(f);
            } else if (rc == -ENOSYS) {
                why += " (a kernel without io_uring, or a seccomp filter)";
            }
            return why;
        }
        ring_mapped();
        std::string why;
        if (io_uring_probe* p = io_uring_get_probe_ring(&ring)) {
            if (!io_uring_opcode_supported(p, io_uring_op_waitid))
                why = "the kernel has no IORING_OP_WAITID (Linux 6.7 or later)";
            io_uring_free_probe(p);
        } else {
            why = "IORING_REGISTER_PROBE failed (io_uring_register refused?)";
        }
        if (why.empty()) {
            // End to end, through io_uring_enter: a WAITID for a pid that is not our child
            // (ourselves) completes with ECHILD.
            siginfo_t si{};
            io_uring_sqe* sqe = io_uring_get_sqe(&ring);
            prep_waitid(sqe, ::getpid(), &si, WEXITED | WNOHANG);
            io_uring_cqe* cqe = nullptr;
            int rc;
            while ((rc = io_uring_submit_and_wait(&ring, 1)) == -EINTR) {
            }
            if (rc < 0)
                why = std::string("io_uring_enter failed: ") + std::strerror(-rc);
            else if (io_uring_peek_cqe(&ring, &cqe) != 0 || cqe->res != -ECHILD)
                why = "IORING_OP_WAITID did not work as expected";
        }
        unmap_ring(ring);
        return why;
    } catch (...) {
        return "out of memory";
    }
}

bool io_uring_usable() noexcept {
    return problem().empty();
}

std::unique_ptr<child_watcher> make_io_uring_watcher(const loop_options&) {
    return std::make_unique<io_uring_watcher>();
}

std::string io_uring_why_unusable() noexcept {
    std::string p = problem();
    return p.empty() ? p : "not usable in this process: " + p;
}

}  // namespace

extern const backend_entry io_uring_backend_entry{
    backend::io_uring, backend_capabilities(backend::io_uring), io_uring_usable,
    make_io_uring_watcher, io_uring_why_unusable};

}  // namespace zreap::detail
