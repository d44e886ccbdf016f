// The Linux-only part of spawning: creating the child with its pidfd in one step, and the
// parent-death signal.
//
// pidfd_open(pid) after fork is only race-free while nothing else can reap that pid; the
// pidfd that clone(CLONE_PIDFD) hands back names the new process itself, so signalling or
// waiting through it can never reach a recycled pid. glibc 2.39's pidfd_spawn does it the
// same way; glibc 2.36 has no wrapper, hence this file.
//
// CLONE_VM | CLONE_VFORK makes it as cheap as posix_spawn (no page-table copy) and means
// clone returns only once the child has exec'd or exited. Sharing memory is why the child
// gets a stack of its own and runs only spawn_child_main, which never allocates; it is also
// what lets the child report a failure before exec straight into the parent's memory
// (spawn_plan::report) instead of through a pipe.

#include "zreap_config.h"

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#if ZREAP_HAVE_PDEATHSIG
#include <sys/prctl.h>
#endif
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "spawn_child.hpp"

namespace zreap::detail {

#if ZREAP_HAVE_PDEATHSIG
ZREAP_CHILD_CODE int set_parent_death_signal(int sig, pid_t parent) noexcept {
    if (::prctl(PR_SET_PDEATHSIG, static_cast<unsigned long>(sig), 0, 0, 0) != 0)
        return errno;
    // The parent may have died between the clone and the prctl: then we were reparented
    // already and the signal will never come.
    return ::getppid() == parent ? 0 : ESRCH;
}
#endif

#if ZREAP_HAVE_CLONE_PIDFD

namespace {

ZREAP_CHILD_CODE int child_entry(void* arg) {
    spawn_child_main(*static_cast<const spawn_plan*>(arg));
}

// Ample for spawn_child_main (a few frames, a few hundred bytes). MAP_NORESERVE: only the
// pages the child touches are ever backed.
constexpr std::size_t stack_size = 256 * 1024;

// One stack per thread, made on first use and kept: CLONE_VFORK returns only once the
// child has exec'd or exited, so the stack is free again when clone returns, and reusing
// it saves an mmap, a munmap (a TLB shootdown in a threaded process) and page faults on
// every spawn.
struct clone_stack {
    void* base = nullptr;
    ~clone_stack() {
        if (base)
            ::munmap(base, stack_size);
    }
    void* top() noexcept {
        if (!base) {
            void* p = ::mmap(nullptr, stack_size, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
            if (p == MAP_FAILED)
                return nullptr;
            base = p;
        }
        // The stack grows down on every architecture glibc's clone() supports but hppa.
        return static_cast<char*>(base) + stack_size;
    }
};

thread_local clone_stack stack;

}  // namespace

pid_t clone_with_pidfd(const spawn_plan& plan, int* pidfd) noexcept {
    void* top = stack.top();
    if (!top)
        return -1;
    *pidfd = -1;
    return ::clone(child_entry, top, CLONE_PIDFD | CLONE_VM | CLONE_VFORK | SIGCHLD,
                   const_cast<spawn_plan*>(&plan), pidfd);
}

int send_signal_pidfd(int pidfd, int sig) noexcept {
    return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}
#endif

}  // namespace zreap::detail
