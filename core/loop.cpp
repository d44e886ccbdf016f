// The loop: one zmq_poll() over zmq sockets, plain fds and the backend's wake fd, plus a
// timer queue and the queue of reaped exits waiting for their callbacks.
//
// When the poll set holds no zmq socket, the loop calls poll() itself instead of zmq_poll:
// zmq_poll always polls once with timeout 0 before it blocks (libzmq 4.3.4, to learn the
// sockets' state first), which is a wasted system call per blocking wait when there are
// no sockets to learn about.

#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#if !defined(FIONREAD) && __has_include(<sys/filio.h>)
#include <sys/filio.h>  // illumos and Solaris define FIONREAD here
#endif
#include <sys/wait.h>
#include <zmq.h>

#include <fcntl.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <ctime>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>

#include <zreap/loop.hpp>

#include "child_state.hpp"
#include "child_watcher.hpp"
#include "error.hpp"
#include "fd_limit.hpp"
#include "loop_access.hpp"
#include "signals.hpp"
#include "unique_fd.hpp"
#include "wake.hpp"

namespace zreap {

namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

enum class kind { io, timer, child, signal };

// One of a child's drain_first fds. The pipe is named by its inode, so that an fd number
// that was closed and reused for another file is never waited for.
struct drain_fd {
    int fd = -1;
    dev_t dev = 0;
    ino_t ino = 0;
    // From the reap on: how many of the bytes that were in the pipe then are still to be
    // read (a lower bound on what the fd's callbacks have read is taken off). <= 0: done.
    long long left = 0;
};

struct source {
    kind k = kind::io;
    // io
    void* socket = nullptr;
    int fd = -1;
    short events = 0;
    std::size_t item_pos = 0;  // its entry in the poll set, while that is not dirty
    std::shared_ptr<std::function<void(short)>> io_cb;
    // timer
    std::multimap<clock::time_point, source_id>::iterator timer_pos;
    milliseconds every{0};
    std::shared_ptr<std::function<void()>> timer_cb;
    // child
    pid_t pid = 0;
    bool reaped = false;  // reported by the watcher, callback not run yet
    std::vector<drain_fd> drain;
    detail::unique_fd own_pidfd;          // the loop's copy of watch_options::pidfd
    std::shared_ptr<child::state> owner;  // set for a child started by zreap::spawn
    std::shared_ptr<std::function<void(const exit_status&)>> child_cb;
    // signal
    int signo = 0;
    std::shared_ptr<std::function<void(int)>> signal_cb;
};

struct pending_exit {
    source_id id;
    exit_status status;
};

// Milliseconds from now until @p t, rounded up so that the poll never returns just before
// a timer is due and spins on zero-length waits.
long long ceil_ms_until(clock::time_point t, clock::time_point now) {
    if (t <= now)
        return 0;
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t - now).count();
    return (ns + 999'999) / 1'000'000;
}

// How many bytes @p fd has waiting to be read; 0 on error. FIONREAD is not in POSIX, but
// every Unix has it (Linux, the BSDs, macOS, illumos); poll() could not tell unread bytes
// from a readable end-of-file, which would hold an exit back forever.
long long unread_bytes(int fd) noexcept {
    int n = 0;
    return ::ioctl(fd, FIONREAD, &n) == 0 && n > 0 ? n : 0;
}

// zmq_poll's events as poll()'s.
short poll_events(short zmq_events) noexcept {
    short ev = 0;
    if (zmq_events & ZMQ_POLLIN)
        ev |= POLLIN;
    if (zmq_events & ZMQ_POLLOUT)
        ev |= POLLOUT;
    if (zmq_events & ZMQ_POLLPRI)
        ev |= POLLPRI;
    return ev;
}

// poll()'s revents as zmq_poll reports them: POLLERR, POLLHUP and POLLNVAL as ZMQ_POLLERR.
short zmq_revents(short poll_revents) noexcept {
    short z = 0;
    if (poll_revents & POLLIN)
        z |= ZMQ_POLLIN;
    if (poll_revents & POLLOUT)
        z |= ZMQ_POLLOUT;
    if (poll_revents & POLLPRI)
        z |= ZMQ_POLLPRI;
    if (poll_revents & ~(POLLIN | POLLOUT | POLLPRI))
        z |= ZMQ_POLLERR;
    return z;
}

// True while @p d.fd still names the pipe it named when the child was watched.
bool same_file(const drain_fd& d) noexcept {
    struct stat st {};
    return ::fstat(d.fd, &st) == 0 && st.st_dev == d.dev && st.st_ino == d.ino;
}

// Sleeps about @p us microseconds (EINTR just ends it early).
void nap_us(long us) noexcept {
    timespec ts{us / 1'000'000, (us % 1'000'000) * 1000};
    ::nanosleep(&ts, nullptr);
}

// Ends a run_once() scope: clears the flag that refuses nested runs.
struct running_guard {
    bool& flag;
    explicit running_guard(bool& f) : flag(f) { flag = true; }
    ~running_guard() { flag = false; }
    running_guard(const running_guard&) = delete;
    running_guard& operator=(const running_guard&) = delete;
};

}  // namespace

struct loop::impl {
    backend id;
    capabilities caps;
    loop_options opts;
    std::unique_ptr<detail::child_watcher> watcher;

    source_id next_id = 1;
    std::unordered_map<source_id, source> sources;
    std::unordered_map<pid_t, source_id> children;  // watched, not yet reaped
    std::multimap<clock::time_point, source_id> timers;

    // The poll set: the watcher's wake fd when it has one, the loop's own wake channel, the
    // watcher's direct fds (a fixed number of entries, refreshed before every poll), then
    // the io sources. Rebuilt only when the set of io sources changes (zmq_poll allocates
    // per call above 16 items otherwise). pfds mirrors items for the socket-free case,
    // where poll() is called directly.
    std::vector<zmq_pollitem_t> items;
    std::vector<pollfd> pfds;
    std::vector<source_id> item_ids;
    static constexpr std::size_t no_item = static_cast<std::size_t>(-1);
    std::size_t watcher_item = no_item;
    std::size_t channel_item = 0;
    std::size_t first_direct_item = 0;
    std::size_t direct_n = 0;
    std::size_t first_io_item = 0;
    std::vector<short> direct_revents;
    std::vector<zmq_pollitem_t> zitems;  // the zmq_poll set: items without unused entries
    std::vector<std::size_t> zitem_index;
    bool has_sockets = false;
    bool items_dirty = true;
    // How many plain-fd sources poll each fd for input: what a held-back exit waits on.
    std::unordered_map<int, int> input_fds;

    std::deque<pending_exit> pending;  // reaped, callback not run yet
    std::vector<int> draining_fds;     // see collect_draining_fds()
    std::vector<exit_status> reap_buf;
    std::vector<std::pair<source_id, short>> ready;
    bool watcher_more = false;
    bool last_immediate = false;  // the current iteration's poll did not block
    bool stop_requested = false;
    bool running = false;  // inside run_once() or dispatch(): a nested run is refused
    // The loop object was destroyed (or assigned over) by a callback: no other callback of
    // that dispatch runs, since they may use what the program freed along with the loop.
    bool abandoned = false;
    // take_channel() turned a request_stop() into stop_requested during this iteration.
    bool async_stop_taken = false;
    loop_stats stats;

    // post(), request_stop() and add_signal() wake the loop through this channel.
    detail::wake_channel channel{"zreap::loop"};
    std::mutex post_mutex;
    std::deque<std::function<void()>> posted_in;   // guarded by post_mutex
    std::deque<std::function<void()>> posted_run;  // taken from posted_in, not run yet
    std::atomic<bool> stop_async{false};
    static_assert(std::atomic<bool>::is_always_lock_free, "request_stop is async-signal-safe");
    std::map<int, source_id> signal_sources;
    std::vector<std::pair<int, source_id>> signal_scratch;
    // embedding: which entries of items prepare() handed out, and that it did
    std::vector<std::size_t> embed_index;
    bool embed_prepared = false;

    explicit impl(const loop_options& o) : opts(o) {
        backend b = o.which ? *o.which : default_backend();
        const detail::backend_entry& e =
            detail::require_usable(b, "zreap::loop(" + std::string(to_string(b)) + ")");
        id = e.id;
        caps = e.caps;
        detail::register_loop(id, caps.reaps_foreign_children);
        try {
            watcher = e.create(opts);
        } catch (...) {
            detail::unregister_loop(caps.reaps_foreign_children);
            throw;
        }
        if (opts.max_exits_per_iteration == 0)
            opts.max_exits_per_iteration = 1;
        direct_n = watcher->direct_slots();
        direct_revents.assign(direct_n, 0);
    }

    ~impl() {
        // Children this loop still watches: those that already exited were ours to reap, so
        // reap them now rather than leave zombies; the running ones are killed and reaped,
        // or released to the program, as the destroy policy says.
        for (auto& [signo, sid] : signal_sources)
            detail::release_signal(signo);
        std::vector<std::pair<pid_t, child::state*>> killed;
        for (auto& [pid, sid] : children) {
            source& s = sources.at(sid);
            watcher->unwatch(pid);
            const bool kill = opts.children_at_destroy == destroy_policy::kill_all ||
                              (opts.children_at_destroy == destroy_policy::kill_spawned && s.owner);
            if (kill) {
                // Unreaped, so the pid (and the group id it leads) is still this child's.
                if (s.owner)
                    s.owner->send_unchecked(SIGKILL, s.owner->leads_group);
                else
                    ::kill(pid, SIGKILL);
                killed.emplace_back(pid, s.owner.get());
            } else if (reap_now(pid) && s.owner) {
                s.owner->reaped = true;
            }
            detail::release_pid(pid);
        }
        wait_for_killed(killed);
        watcher.reset();
        detail::unregister_loop(caps.reaps_foreign_children);
    }

    // Reaps @p pid if it has exited; true if it is gone (reaped now or by other code).
    static bool reap_now(pid_t pid) noexcept {
        siginfo_t si{};
        int rc;
        while ((rc = ::waitid(P_PID, static_cast<id_t>(pid), &si, WEXITED | WNOHANG)) < 0 &&
               errno == EINTR) {
        }
        return rc < 0 ? errno == ECHILD : si.si_pid != 0;
    }

    // Reaps the children the destructor killed. A SIGKILLed process is gone within
    // milliseconds, unless a tracer holds it or it is stuck in the kernel (an
    // uninterruptible wait): such a child is released after a bounded wait, never waited
    // for forever in a destructor.
    static void wait_for_killed(std::vector<std::pair<pid_t, child::state*>>& killed) noexcept {
        constexpr long total_us = 3'000'000;
        long waited = 0;
        for (long nap = 100;; nap = std::min(nap * 2, 50'000L)) {
            for (std::size_t i = 0; i < killed.size();) {
                if (reap_now(killed[i].first)) {
                    if (killed[i].second)
                        killed[i].second->reaped = true;
                    killed[i] = killed.back();
                    killed.pop_back();
                } else {
                    ++i;
                }
            }
            if (killed.empty() || waited >= total_us)
                return;
            nap_us(nap);
            waited += nap;
        }
    }

    source_id add(source s) {
        source_id sid = next_id++;
        sources.emplace(sid, std::move(s));
        return sid;
    }

    void rebuild_items() {
        items.clear();
        item_ids.clear();
        watcher_item = no_item;
        if (int wfd = watcher->wake_fd(); wfd >= 0) {
            watcher_item = items.size();
            items.push_back(zmq_pollitem_t{nullptr, wfd, ZMQ_POLLIN, 0});
            item_ids.push_back(0);
        }
        channel_item = items.size();
        items.push_back(zmq_pollitem_t{nullptr, channel.fd(), ZMQ_POLLIN, 0});
        item_ids.push_back(0);
        first_direct_item = items.size();
        for (std::size_t i = 0; i < direct_n; ++i) {
            items.push_back(zmq_pollitem_t{nullptr, -1, ZMQ_POLLIN, 0});
            item_ids.push_back(0);
        }
        first_io_item = items.size();
        has_sockets = false;
        for (auto& [sid, s] : sources) {
            if (s.k != kind::io)
                continue;
            s.item_pos = items.size();
            items.push_back(zmq_pollitem_t{s.socket, s.fd, s.events, 0});
            item_ids.push_back(sid);
            has_sockets = has_sockets || s.socket != nullptr;
        }
        pfds.clear();
        for (const zmq_pollitem_t& item : items)
            pfds.push_back(pollfd{item.fd, poll_events(item.events), 0});
        items_dirty = false;
    }

    // One wait on the whole set: zmq_poll if there are sockets, poll() otherwise, with
    // zmq_poll's meaning of revents either way. Returns -1 with @p err set on failure.
    int poll_items(int wait, int& err) {
        if (has_sockets) {
            // Without the unused direct entries (fd -1): poll() skips those, but libzmq
            // hands a set with a thread-safe socket to its poller, which refuses them.
            zitems.clear();
            zitem_index.clear();
            for (std::size_t i = 0; i < items.size(); ++i) {
                items[i].revents = 0;
                if (items[i].socket || items[i].fd >= 0) {
                    zitems.push_back(items[i]);
                    zitem_index.push_back(i);
                }
            }
            int rc = zmq_poll(zitems.data(), static_cast<int>(zitems.size()), wait);
            if (rc < 0) {
                err = zmq_errno();
                return rc;
            }
            for (std::size_t j = 0; j < zitems.size(); ++j)
                items[zitem_index[j]].revents = zitems[j].revents;
            return rc;
        }
        int rc = ::poll(pfds.data(), static_cast<nfds_t>(pfds.size()), wait);
        if (rc < 0) {
            err = errno;
            for (auto& item : items)
                item.revents = 0;
            return rc;
        }
        for (std::size_t i = 0; i < items.size(); ++i)
            items[i].revents = zmq_revents(pfds[i].revents);
        return rc;
    }

    void erase(std::unordered_map<source_id, source>::iterator it) noexcept {
        source& s = it->second;
        switch (s.k) {
            case kind::io:
                items_dirty = true;
                count_input(s, -1);
                break;
            case kind::timer:
                timers.erase(s.timer_pos);
                break;
            case kind::child:
                if (!s.reaped) {
                    watcher->unwatch(s.pid);
                    children.erase(s.pid);
                    detail::release_pid(s.pid);
                    // Left to other code, which may reap it: the handle may no longer
                    // signal it, and a pending terminate() SIGKILL goes with the source.
                    if (s.owner) {
                        s.owner->released = true;
                        if (source_id t = std::exchange(s.owner->term_timer, 0))
                            remove(t);
                    }
                }
                break;
            case kind::signal:
                detail::release_signal(s.signo);
                signal_sources.erase(s.signo);
                break;
        }
        sources.erase(it);
    }

    source_id add_signal(int signo, std::function<void(int)> cb) {
        if (!cb)
            detail::throw_errno(EINVAL, "zreap::loop::add_signal: empty callback");
        detail::claim_signal(signo, this, channel.notify_fd());
        source s;
        s.k = kind::signal;
        s.signo = signo;
        s.signal_cb = std::make_shared<std::function<void(int)>>(std::move(cb));
        source_id sid;
        try {
            sid = add(std::move(s));
            signal_sources.emplace(signo, sid);
        } catch (...) {
            detail::release_signal(signo);
            throw;
        }
        return sid;
    }

    void modify(source_id id, short events) {
        auto it = sources.find(id);
        if (it == sources.end())
            detail::throw_errno(ENOENT,
                                "zreap::loop::modify(" + std::to_string(id) + "): no such source");
        source& s = it->second;
        if (s.k != kind::io)
            detail::throw_errno(EINVAL, "zreap::loop::modify(" + std::to_string(id) +
                                            "): not an fd or socket source");
        count_input(s, -1);
        s.events = events;
        count_input(s, +1);
        if (items_dirty)
            return;  // the rebuild takes the new events
        items[s.item_pos].events = events;
        pfds[s.item_pos].events = poll_events(events);
    }

    void post(std::function<void()> fn) {
        if (!fn)
            detail::throw_errno(EINVAL, "zreap::loop::post: empty function");
        bool was_empty;
        {
            std::lock_guard<std::mutex> lock(post_mutex);
            was_empty = posted_in.empty();
            posted_in.push_back(std::move(fn));
        }
        // The loop drains the channel before it takes the queue, so a queue that was not
        // empty will be taken anyway: one wake-up per batch is enough.
        if (was_empty)
            channel.notify();
    }

    // The channel said something: a stop request, posted functions, signals. Drained
    // first, so that what comes after the drain wakes the next poll.
    void take_channel() {
        channel.drain();
        if (stop_async.exchange(false, std::memory_order_acq_rel)) {
            stop_requested = true;
            async_stop_taken = true;
        }
        std::lock_guard<std::mutex> lock(post_mutex);
        while (!posted_in.empty()) {
            posted_run.push_back(std::move(posted_in.front()));
            posted_in.pop_front();
        }
    }

    int dispatch_signals() {
        if (signal_sources.empty())
            return 0;
        signal_scratch.assign(signal_sources.begin(), signal_sources.end());
        int n = 0;
        for (auto [signo, sid] : signal_scratch) {
            if (abandoned)
                break;
            if (!detail::take_signal(signo))
                continue;
            auto it = sources.find(sid);
            if (it == sources.end())
                continue;  // removed by an earlier callback
            auto cb = it->second.signal_cb;
            ++n;
            ++stats.signals;
            (*cb)(signo);
        }
        return n;
    }

    int dispatch_posted() {
        int n = 0;
        // Only what was taken before this dispatch: a function that posts again does not
        // keep this loop here forever.
        for (std::size_t count = posted_run.size(); count > 0 && !posted_run.empty() && !abandoned;
             --count) {
            std::function<void()> fn = std::move(posted_run.front());
            posted_run.pop_front();  // before the call: run once, even if it throws
            ++n;
            ++stats.posted;
            fn();
        }
        return n;
    }

    void remove(source_id id) noexcept {
        auto it = sources.find(id);
        if (it != sources.end())
            erase(it);
    }

    source_id add_timer(milliseconds first, milliseconds every, std::function<void()> cb) {
        if (!cb)
            detail::throw_errno(EINVAL, "zreap::loop::add_timer: empty callback");
        if (first.count() < 0 || every.count() < 0)
            detail::throw_errno(EINVAL, "zreap::loop::add_timer: negative interval");
        source s;
        s.k = kind::timer;
        s.every = every;
        s.timer_cb = std::make_shared<std::function<void()>>(std::move(cb));
        source_id sid = add(std::move(s));
        sources[sid].timer_pos = timers.emplace(clock::now() + first, sid);
        return sid;
    }

    // watch_child, for both the public call (@p owner null) and zreap::spawn's children.
    // @p pidfd is the caller's; the loop's copy of it (or the owner's own) is what the
    // backend borrows.
    source_id watch(pid_t pid, std::function<void(const exit_status&)> cb, int pidfd,
                    const std::vector<int>& drain_first, std::shared_ptr<child::state> owner) {
        // Built only for an error message: watch_child is on every child's path.
        auto what = [pid] { return "zreap::loop::watch_child(" + std::to_string(pid) + ")"; };
        if (pid <= 0)
            detail::throw_errno(EINVAL, what() + ": not a process id");
        if (!cb)
            detail::throw_errno(EINVAL, what() + ": empty callback");
        source s;
        s.k = kind::child;
        s.pid = pid;
        for (int fd : drain_first) {
            struct stat st {};
            if (::fstat(fd, &st) != 0)
                detail::throw_errno(what() + ": drain_first fd " + std::to_string(fd));
            s.drain.push_back(drain_fd{fd, st.st_dev, st.st_ino, 0});
        }
        if (pidfd >= 0 && !owner) {
            s.own_pidfd.reset(::fcntl(pidfd, F_DUPFD_CLOEXEC, 3));
            if (!s.own_pidfd)
                detail::throw_errno(what() + ": duplicating watch_options::pidfd");
            pidfd = s.own_pidfd.get();
        }
        // WNOWAIT: ask whether pid is our unreaped child without reaping it.
        siginfo_t si{};
        int rc;
        while ((rc = ::waitid(P_PID, static_cast<id_t>(pid), &si, WEXITED | WNOHANG | WNOWAIT)) <
                   0 &&
               errno == EINTR) {
        }
        if (rc < 0) {
            int err = errno;
            detail::throw_errno(err, err == ECHILD ? what() +
                                                         ": not a child of this process, or "
                                                         "already reaped"
                                                   : what() + ": waitid");
        }
        // Allocated before the backend watches, so that nothing after it can fail but the
        // two insertions, which are undone with the watch if they do.
        s.owner = std::move(owner);
        s.child_cb = std::make_shared<std::function<void(const exit_status&)>>(std::move(cb));
        if (!detail::claim_pid(pid))
            detail::throw_errno(EEXIST,
                                what() + ": already watched by a zreap loop in this process");
        try {
            // One fd per child (pidfd): out of them at the soft limit, raise it once.
            detail::retry_after_raising_fd_limit(
                opts.raise_fd_limit, [&] { watcher->watch(pid, pidfd, si.si_pid != 0); });
        } catch (...) {
            detail::release_pid(pid);
            throw;
        }
        source_id sid = 0;
        try {
            sid = add(std::move(s));
            children.emplace(pid, sid);
        } catch (...) {
            if (sid != 0)
                sources.erase(sid);
            watcher->unwatch(pid);
            detail::release_pid(pid);
            throw;
        }
        return sid;
    }

    int poll_timeout(clock::time_point now, bool has_deadline, clock::time_point deadline,
                     bool immediate) const {
        if (immediate)
            return 0;
        long long t = -1;
        if (has_deadline)
            t = ceil_ms_until(deadline, now);
        if (!timers.empty()) {
            long long tt = ceil_ms_until(timers.begin()->first, now);
            t = t < 0 ? tt : std::min(t, tt);
        }
        if (int cap = watcher->max_wait_ms(); cap >= 0)
            t = t < 0 ? cap : std::min<long long>(t, cap);
        return t < 0 ? -1 : static_cast<int>(std::min<long long>(t, 1LL << 30));
    }

    int dispatch_io() {
        collect_draining_fds();
        int n = 0;
        for (auto [sid, revents] : ready) {
            if (abandoned)
                break;
            auto it = sources.find(sid);
            if (it == sources.end())
                continue;                // removed by an earlier callback
            auto cb = it->second.io_cb;  // keeps the callable alive if it removes itself
            const int fd = it->second.socket ? -1 : it->second.fd;
            const bool tracked =
                fd >= 0 && !draining_fds.empty() &&
                std::find(draining_fds.begin(), draining_fds.end(), fd) != draining_fds.end();
            const long long before = tracked ? unread_bytes(fd) : 0;
            ++n;
            (*cb)(revents);
            if (tracked)
                credit_drained(fd, before - unread_bytes(fd));
        }
        return n;
    }

    // The fds that held-back exits wait on, so that dispatch_io counts what their callbacks
    // read. Empty, at no cost, when no exit is held back.
    void collect_draining_fds() {
        draining_fds.clear();
        for (const pending_exit& pe : pending) {
            auto it = sources.find(pe.id);
            if (it == sources.end())
                continue;
            for (const drain_fd& d : it->second.drain)
                if (d.left > 0)
                    draining_fds.push_back(d.fd);
        }
    }

    // A callback of @p fd ran while held-back exits wait on it, and FIONREAD fell by
    // @p fell. It read at least that much; if other writers refilled the pipe meanwhile it
    // read more, unseen, so every callback counts as at least one byte. The wait is thus
    // bounded by the bytes present at the reap, whatever other writers do.
    void credit_drained(int fd, long long fell) {
        const long long got = std::max(fell, 1LL);
        for (const pending_exit& pe : pending) {
            auto it = sources.find(pe.id);
            if (it == sources.end())
                continue;
            for (drain_fd& d : it->second.drain)
                if (d.fd == fd && d.left > 0)
                    d.left -= got;
        }
    }

    // Runs the exit callbacks queued at the start of this call. An exit whose drain_first
    // fds still hold data goes back to the end of the queue for the next iteration.
    int dispatch_exits(bool& deferred) {
        int n = 0;
        std::size_t count = pending.size();
        for (std::size_t i = 0; i < count && !pending.empty() && !abandoned; ++i) {
            pending_exit pe = pending.front();
            pending.pop_front();
            auto it = sources.find(pe.id);
            if (it == sources.end())
                continue;  // removed after it was reaped
            if (must_wait_for_output(it->second)) {
                pending.push_back(pe);
                deferred = true;
                continue;
            }
            auto cb = it->second.child_cb;
            sources.erase(it);
            ++n;
            (*cb)(pe.status);
        }
        return n;
    }

    // True while one of the child's drain fds still names its pipe, is polled for input by
    // a source of this loop, has unread bytes, and has not had the bytes present at the reap
    // read yet. A drain fd found done stays done.
    bool must_wait_for_output(source& child) {
        bool wait = false;
        for (drain_fd& d : child.drain) {
            if (d.left <= 0)
                continue;
            if (!same_file(d) || !polled_for_input(d.fd) || unread_bytes(d.fd) == 0) {
                d.left = 0;
                continue;
            }
            wait = true;
        }
        return wait;
    }

    bool polled_for_input(int fd) const noexcept {
        auto it = input_fds.find(fd);
        return it != input_fds.end() && it->second > 0;
    }

    // Adds @p delta to the count of sources polling @p s's fd for input, if it does.
    void count_input(const source& s, int delta) {
        if (s.socket || !(s.events & ZMQ_POLLIN))
            return;
        auto it = input_fds.emplace(s.fd, 0).first;
        if ((it->second += delta) <= 0)
            input_fds.erase(it);
    }

    source_id add_io(source s) {
        items_dirty = true;
        count_input(s, +1);
        try {
            return add(std::move(s));
        } catch (...) {
            count_input(s, -1);
            throw;
        }
    }

    int dispatch_timers(clock::time_point now) {
        int n = 0;
        // Only timers due now run; a periodic timer is rescheduled strictly after now, so
        // this ends even if callbacks are slow.
        while (!timers.empty() && timers.begin()->first <= now && !abandoned) {
            auto tpos = timers.begin();
            clock::time_point due = tpos->first;
            source_id sid = tpos->second;
            timers.erase(tpos);
            auto it = sources.find(sid);
            auto cb = it->second.timer_cb;
            if (it->second.every.count() > 0) {
                clock::time_point next = due + it->second.every;
                if (next <= now)
                    next = now + it->second.every;  // skip missed ticks
                it->second.timer_pos = timers.emplace(next, sid);
            } else {
                sources.erase(it);
            }
            ++n;
            (*cb)();
        }
        return n;
    }

    // Moves the statuses the watcher just reported into the queue of pending exits. From
    // here on the pid may be recycled: a spawned child's handle learns it now, before its
    // exit callback (which may wait for output), and its terminate() timer goes.
    void queue_reaped() {
        for (const exit_status& st : reap_buf) {
            ++stats.exits;
            auto c = children.find(st.pid);
            if (c == children.end())
                continue;  // only a foreign-reaping backend does this
            source& s = sources.at(c->second);
            s.reaped = true;
            // Only a pipe that a source reads can hold the exit back: no system call else.
            for (drain_fd& d : s.drain)
                d.left = polled_for_input(d.fd) && same_file(d) ? unread_bytes(d.fd) : 0;
            pending.push_back({c->second, st});
            children.erase(c);
            detail::release_pid(st.pid);
            if (s.owner) {
                s.owner->reaped = true;
                if (source_id t = std::exchange(s.owner->term_timer, 0))
                    remove(t);
            }
        }
        reap_buf.clear();
    }

    // Before a poll: the set up to date, the direct fds in it, the timeout.
    int begin_iteration(bool has_deadline, clock::time_point deadline) {
        if (items_dirty)
            rebuild_items();
        bool immediate = !pending.empty() || watcher_more || !posted_run.empty();
        // Asked even when immediate, because sigaction consumes its flag here.
        immediate = watcher->wants_immediate_poll() || immediate;
        last_immediate = immediate;
        const int* dfds = watcher->direct_fds();
        for (std::size_t i = 0; i < direct_n; ++i) {
            items[first_direct_item + i].fd = dfds[i];
            pfds[first_direct_item + i].fd = dfds[i];
        }
        return poll_timeout(clock::now(), has_deadline, deadline, immediate);
    }

    // A callback threw out of this iteration's dispatch, maybe before the signal callbacks
    // ran, after the channel that announced them was drained, and after a request_stop()
    // was taken: the next poll must not sleep on them, and that request must stop the
    // next run() too (which starts by clearing stop_requested).
    void keep_wakeups_after_throw() noexcept {
        if (async_stop_taken)
            stop_async.store(true, std::memory_order_release);
        if (async_stop_taken || !signal_sources.empty())
            channel.notify();
    }

    // After a poll (items[].revents filled in, all 0 after EINTR or a timeout): reap,
    // then dispatch. Returns how many callbacks ran.
    int finish_iteration(bool interrupted) {
        async_stop_taken = false;
        detail::poll_result r;
        r.interrupted = interrupted;
        ready.clear();
        bool direct_ready = false;
        for (std::size_t i = 0; i < direct_n; ++i) {
            direct_revents[i] = items[first_direct_item + i].revents;
            direct_ready = direct_ready || direct_revents[i] != 0;
        }
        if (direct_n > 0)
            r.direct_revents = direct_revents.data();
        r.woken = watcher_item != no_item && items[watcher_item].revents != 0;
        const bool channel_ready = items[channel_item].revents != 0;
        for (std::size_t i = first_io_item; i < items.size(); ++i)
            if (items[i].revents)
                ready.emplace_back(item_ids[i], items[i].revents);
        // An EINTR may be one of our own signal handlers, which has written the channel.
        if (channel_ready || (interrupted && !signal_sources.empty()))
            take_channel();

        std::size_t budget = opts.max_exits_per_iteration > pending.size()
                                 ? opts.max_exits_per_iteration - pending.size()
                                 : 0;
        reap_buf.clear();
        // A failure to reap (a waitid error) is reported after this iteration's dispatch:
        // the exits the backend did reap are gone from the kernel and are delivered first,
        // and one child that cannot be reaped must not hold back the others' callbacks on
        // every later iteration.
        std::exception_ptr reap_error;
        try {
            watcher_more = budget > 0 ? watcher->reap(r, reap_buf, budget) : true;
        } catch (...) {
            reap_error = std::current_exception();
            watcher_more = false;
        }
        queue_reaped();

        // Output before exit: fds first, so a child's last words are read before its exit
        // callback runs; then exits; then timers, signals and posted functions.
        int n = 0;
        bool deferred = false;
        try {
            n = dispatch_io();
            n += dispatch_exits(deferred);
            n += dispatch_timers(clock::now());
            n += dispatch_signals();
            n += dispatch_posted();
        } catch (...) {
            keep_wakeups_after_throw();
            throw;
        }
        if (reap_error) {
            keep_wakeups_after_throw();
            std::rethrow_exception(reap_error);
        }
        if (n == 0 && !interrupted && !deferred && !last_immediate && !r.woken && !direct_ready &&
            !channel_ready)
            ++stats.idle_wakeups;
        return n;
    }

    void refuse_nested(const char* call) const {
        if (running)
            throw std::logic_error(std::string("zreap::loop::") + call +
                                   ": called from a callback of the same loop; a loop cannot "
                                   "be run while it is dispatching (return from the callback "
                                   "instead)");
    }

    int run_once(milliseconds timeout) {
        refuse_nested("run_once");
        running_guard guard(running);
        const bool has_deadline = timeout.count() >= 0;
        const clock::time_point deadline =
            clock::now() + (has_deadline ? timeout : milliseconds(0));
        for (;;) {
            const int wait = begin_iteration(has_deadline, deadline);
            int err = 0;
            const int rc = poll_items(wait, err);
            ++stats.polls;
            bool interrupted = false;
            if (rc < 0) {
                if (err != EINTR)
                    detail::throw_errno(err, has_sockets ? "zreap: zmq_poll" : "zreap: poll");
                interrupted = true;
                ++stats.interrupted;
            }
            const int n = finish_iteration(interrupted);
            if (n > 0)
                return n;
            if (stop_requested)
                return 0;
            if (has_deadline && clock::now() >= deadline)
                return 0;
        }
    }

    int prepare(std::vector<zmq_pollitem_t>& out) {
        refuse_nested("prepare");
        const int wait = begin_iteration(false, clock::time_point{});
        embed_index.clear();
        for (std::size_t i = 0; i < items.size(); ++i) {
            // Unused direct entries (fd -1) are left out, as for zmq_poll.
            if (!items[i].socket && items[i].fd < 0)
                continue;
            zmq_pollitem_t it = items[i];
            it.revents = 0;
            out.push_back(it);
            embed_index.push_back(i);
        }
        embed_prepared = true;
        return wait;
    }

    int dispatch(const zmq_pollitem_t* in, std::size_t n) {
        refuse_nested("dispatch");
        if (!embed_prepared || n != embed_index.size() || (n > 0 && !in))
            throw std::logic_error("zreap::loop::dispatch: pass exactly the " +
                                   std::to_string(embed_index.size()) +
                                   " items the last prepare() appended, once");
        running_guard guard(running);
        embed_prepared = false;
        for (auto& item : items)
            item.revents = 0;
        for (std::size_t j = 0; j < n; ++j)
            items[embed_index[j]].revents = in[j].revents;
        ++stats.polls;
        return finish_iteration(false);
    }
};

loop::loop() : loop(loop_options{}) {}

loop::loop(backend b)
    : loop([b] {
          loop_options o;
          o.which = b;
          return o;
      }()) {}

loop::loop(const loop_options& options) : impl_(std::make_shared<impl>(options)) {}

// A loop destroyed (or assigned over) by one of its own callbacks: no other callback of
// that dispatch runs, run() stops, and the state goes when the dispatch ends (run_once
// holds it until then).
loop::~loop() {
    if (impl_ && impl_->running) {
        impl_->stop_requested = true;
        impl_->abandoned = true;
    }
}
loop::loop(loop&&) noexcept = default;
loop& loop::operator=(loop&& other) noexcept {
    if (this != &other) {
        loop gone(std::move(*this));
        impl_ = std::move(other.impl_);
    }
    return *this;
}

backend loop::which() const noexcept {
    return impl_->id;
}
capabilities loop::caps() const noexcept {
    return impl_->caps;
}

source_id loop::add_socket(void* zmq_socket, short events, std::function<void(short)> cb) {
    if (!zmq_socket)
        detail::throw_errno(EINVAL, "zreap::loop::add_socket: null socket");
    if (!cb)
        detail::throw_errno(EINVAL, "zreap::loop::add_socket: empty callback");
    source s;
    s.socket = zmq_socket;
    s.events = events;
    s.io_cb = std::make_shared<std::function<void(short)>>(std::move(cb));
    return impl_->add_io(std::move(s));
}

source_id loop::add_fd(int fd, short events, std::function<void(short)> cb) {
    if (fd < 0)
        detail::throw_errno(EBADF, "zreap::loop::add_fd(" + std::to_string(fd) + ")");
    if (!cb)
        detail::throw_errno(EINVAL, "zreap::loop::add_fd: empty callback");
    source s;
    s.fd = fd;
    s.events = events;
    s.io_cb = std::make_shared<std::function<void(short)>>(std::move(cb));
    return impl_->add_io(std::move(s));
}

source_id loop::add_timer(std::chrono::milliseconds first, std::chrono::milliseconds every,
                          std::function<void()> cb) {
    return impl_->add_timer(first, every, std::move(cb));
}

source_id loop::add_signal(int signo, std::function<void(int)> cb) {
    return impl_->add_signal(signo, std::move(cb));
}

void loop::modify(source_id id, short events) {
    impl_->modify(id, events);
}

void loop::post(std::function<void()> fn) {
    impl_->post(std::move(fn));
}

void loop::request_stop() noexcept {
    impl_->stop_async.store(true, std::memory_order_release);
    impl_->channel.notify();
}

int loop::prepare(std::vector<zmq_pollitem_t>& items) {
    return impl_->prepare(items);
}

int loop::dispatch(const zmq_pollitem_t* items, std::size_t n) {
    std::shared_ptr<impl> keep = impl_;
    return keep->dispatch(items, n);
}

source_id loop::watch_child(pid_t pid, std::function<void(const exit_status&)> cb,
                            const watch_options& options) {
    return impl_->watch(pid, std::move(cb), options.pidfd, options.drain_first, nullptr);
}

void loop::remove(source_id id) noexcept {
    impl_->remove(id);
}

bool loop::contains(source_id id) const noexcept {
    return impl_->sources.count(id) != 0;
}

std::size_t loop::size() const noexcept {
    return impl_->sources.size();
}

void loop::run() {
    // Held for the whole run: a callback may destroy the loop object.
    std::shared_ptr<impl> keep = impl_;
    keep->refuse_nested("run");
    keep->stop_requested = false;
    while (!keep->stop_requested && !keep->sources.empty())
        keep->run_once(milliseconds(-1));
    keep->stop_requested = false;
}

int loop::run_once(std::chrono::milliseconds timeout) {
    std::shared_ptr<impl> keep = impl_;
    return keep->run_once(timeout);
}

void loop::stop() noexcept {
    impl_->stop_requested = true;
}

loop_stats loop::stats() const noexcept {
    loop_stats s = impl_->stats;
    s.lost_wakeups = impl_->watcher->lost_wakeups();
    s.rescued_signals = impl_->watcher->rescued_signals();
    return s;
}

namespace detail {

backend loop_backend(const loop::impl& lp) noexcept {
    return lp.id;
}

bool loop_raises_fd_limit(const loop::impl& lp) noexcept {
    return lp.opts.raise_fd_limit;
}

source_id watch_spawned(loop::impl& lp, const std::shared_ptr<child::state>& owner,
                        std::function<void(const exit_status&)> cb, std::vector<int> drain_first) {
    return lp.watch(owner->pid, std::move(cb), owner->pidfd.get(), drain_first, owner);
}

source_id add_timer(loop::impl& lp, std::chrono::milliseconds first,
                    std::chrono::milliseconds every, std::function<void()> cb) {
    return lp.add_timer(first, every, std::move(cb));
}

void remove(loop::impl& lp, source_id id) noexcept {
    lp.remove(id);
}

}  // namespace detail

}  // namespace zreap
