// backends/signalfd's thread check (sigchld_thread_check): what it makes of a thread that
// is being created. glibc (>= 2.32) blocks every signal in a new thread, its own internal
// ones included, until the thread's start routine runs, and the thread may leave SIGCHLD
// unblocked a moment later; so such a mask must not count as an answer. libzmq's threads
// block every signal an application can block, for good, and must not be read again and
// again. The tests make the "being created" mask themselves, with the system call glibc
// uses, so that they do not depend on catching a thread at the right moment.

#include "zreap_config.h"

#if ZREAP_HAVE_SIGNALFD

#include <dirent.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <zmq.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "backends/signalfd/sigchld_mask_linux.hpp"
#include "helpers.hpp"

using namespace zreap_test;
using zreap::detail::sigchld_thread_check;

namespace {

// A thread whose mask the test sets: first every signal blocked, internal ones included
// (rt_sigprocmask with all bits, as glibc's pthread_create does for a thread being
// created), then, on request, SIGCHLD unblocked.
class newborn_mask_thread : public mask_thread {
  public:
    newborn_mask_thread()
        : mask_thread([] {
              std::uint64_t all = ~std::uint64_t{0};
              ::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, nullptr, sizeof all);
          }) {}
};

// A thread seen in the all-blocked mask is not recorded: the next check reads it again,
// and refuses it once it leaves SIGCHLD unblocked. Before the fix the first check recorded
// it as blocking SIGCHLD and no later check looked at it again.
TEST(SigchldThreadCheck, ThreadBeingCreatedIsReadAgainUntilItSettles) {
    newborn_mask_thread helper;
    sigchld_thread_check check("check test");
    ASSERT_NO_THROW(check.check_all());
    EXPECT_EQ(check.unsettled(), 1u);
    ASSERT_NO_THROW(check.check_new());
    EXPECT_EQ(check.unsettled(), 1u);
    helper.unblock_sigchld();
    try {
        check.check_new();
        FAIL() << "a thread that left SIGCHLD unblocked after its creation was not refused";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), EINVAL);
        EXPECT_NE(std::string(e.what()).find(std::to_string(helper.tid())), std::string::npos)
            << e.what();
    }
}

// The cost is bounded: a thread that keeps the all-blocked mask for settle_window is taken
// to block everything for good and is not read again (what it does afterwards is left to
// the signalfd backend's SIGCHLD handler).
TEST(SigchldThreadCheck, AllBlockedThreadCountsAsSettledAfterTheWindow) {
    newborn_mask_thread helper;
    sigchld_thread_check check("check test");
    const auto first = clock_type::now();
    ASSERT_NO_THROW(check.check_all());
    EXPECT_EQ(check.unsettled(), 1u);
    std::this_thread::sleep_until(first + sigchld_thread_check::settle_window + 5ms);
    ASSERT_NO_THROW(check.check_new());
    EXPECT_EQ(check.unsettled(), 0u);
    helper.unblock_sigchld();
    EXPECT_NO_THROW(check.check_new()) << "a settled thread was read again";
}

// The SigBlk masks of the threads named @p prefix, or "" for each one that is gone.
std::vector<std::string> masks_of(const char* prefix) {
    std::vector<std::string> out;
    DIR* d = ::opendir("/proc/self/task");
    if (!d)
        return out;
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        std::string base = std::string("/proc/self/task/") + e->d_name;
        char name[64] = {};
        if (FILE* f = std::fopen((base + "/comm").c_str(), "r")) {
            if (!std::fgets(name, sizeof name, f))
                name[0] = 0;
            std::fclose(f);
        }
        if (std::strncmp(name, prefix, std::strlen(prefix)) != 0)
            continue;
        std::string mask;
        if (FILE* f = std::fopen((base + "/status").c_str(), "r")) {
            char line[256];
            while (std::fgets(line, sizeof line, f))
                if (std::strncmp(line, "SigBlk:", 7) == 0)
                    mask = std::strtok(line + 7, " \t\n");
            std::fclose(f);
        }
        out.push_back(mask);
    }
    ::closedir(d);
    return out;
}

// True if the SigBlk @p mask blocks SIGCHLD and is not the all-blocked mask of a thread
// being created (64 signals: all bits but SIGKILL's and SIGSTOP's).
bool blocks_sigchld_for_good(const std::string& mask) {
    if (mask.size() < 16)
        return false;
    const std::uint64_t v = std::strtoull(mask.c_str() + mask.size() - 16, nullptr, 16);
    const std::uint64_t all =
        ~((std::uint64_t{1} << (SIGKILL - 1)) | (std::uint64_t{1} << (SIGSTOP - 1)));
    return v != all && ((v >> (SIGCHLD - 1)) & 1) != 0;
}

// libzmq's I/O and reaper threads block with sigfillset() and pthread_sigmask(), which leave
// out glibc's internal signals: once they run, their mask is not the one of a thread being
// created, so they are recorded at once and cost nothing at later checks.
TEST(SigchldThreadCheck, LibzmqThreadsAreSettled) {
    void* ctx = zmq_ctx_new();
    void* s = zmq_socket(ctx, ZMQ_PAIR);  // starts the context's threads
    ASSERT_NE(s, nullptr);
    // Until both have blocked their signals themselves (they are just being started).
    const auto end = clock_type::now() + 10s;
    std::vector<std::string> masks;
    for (;;) {
        masks = masks_of("ZMQbg/");
        bool ready = masks.size() >= 2;
        for (const std::string& m : masks)
            ready = ready && blocks_sigchld_for_good(m);
        if (ready || clock_type::now() > end)
            break;
        std::this_thread::yield();
    }
    ASSERT_GE(masks.size(), 2u) << "libzmq started no threads";
    for (const std::string& m : masks)
        std::printf("[ libzmq   ] thread mask SigBlk %s\n", m.c_str());
    sigchld_thread_check check("check test");
    EXPECT_NO_THROW(check.check_all());
    EXPECT_EQ(check.unsettled(), 0u) << "libzmq's threads look like threads being created";
    zmq_close(s);
    zmq_ctx_term(ctx);
}

}  // namespace

#endif  // ZREAP_HAVE_SIGNALFD
