#include <zreap/exit_status.hpp>

#include <signal.h>
#include <sys/resource.h>

#include <cstring>

namespace zreap {

bool exit_status::core_dumped() const noexcept {
#ifdef WCOREDUMP
    return signaled() && WCOREDUMP(raw);
#else
    // WCOREDUMP is not in POSIX (glibc hides it under a strict _POSIX_C_SOURCE), but every
    // Unix that reports core dumps flags them with 0x80 in the status word, the same
    // layout from_siginfo() builds.
    return signaled() && (raw & 0x80) != 0;
#endif
}

exit_status exit_status::from_wait_status(pid_t pid, int status) noexcept {
    exit_status s;
    s.pid = pid;
    s.raw = status;
    return s;
}

void exit_status::set_usage(const struct rusage& ru) noexcept {
    using std::chrono::microseconds;
    using std::chrono::seconds;
    has_usage = true;
    usage.user_cpu = seconds(ru.ru_utime.tv_sec) + microseconds(ru.ru_utime.tv_usec);
    usage.system_cpu = seconds(ru.ru_stime.tv_sec) + microseconds(ru.ru_stime.tv_usec);
#if defined(__APPLE__)
    usage.max_rss_kib = static_cast<long>(ru.ru_maxrss / 1024);  // bytes there
#else
    usage.max_rss_kib = static_cast<long>(ru.ru_maxrss);  // KiB on Linux and the BSDs
#endif
}

exit_status exit_status::from_siginfo(const siginfo_t& info) noexcept {
    // Rebuild the classic status word (exit code in bits 8-15, signal in bits 0-6, core
    // flag 0x80), the layout every Unix's W* macros decode.
    int raw = 0;
    switch (info.si_code) {
        case CLD_EXITED:
            raw = (info.si_status & 0xff) << 8;
            break;
        case CLD_DUMPED:
            raw = (info.si_status & 0x7f) | 0x80;
            break;
        case CLD_KILLED:
        default:
            raw = info.si_status & 0x7f;
            break;
    }
    return from_wait_status(info.si_pid, raw);
}

namespace {

// sigabbrev_np() is GNU-only; the POSIX signals are few enough to name here.
const char* signal_name(int sig) noexcept {
    switch (sig) {
        case SIGHUP:
            return "SIGHUP";
        case SIGINT:
            return "SIGINT";
        case SIGQUIT:
            return "SIGQUIT";
        case SIGILL:
            return "SIGILL";
        case SIGTRAP:
            return "SIGTRAP";
        case SIGABRT:
            return "SIGABRT";
        case SIGBUS:
            return "SIGBUS";
        case SIGFPE:
            return "SIGFPE";
        case SIGKILL:
            return "SIGKILL";
        case SIGUSR1:
            return "SIGUSR1";
        case SIGSEGV:
            return "SIGSEGV";
        case SIGUSR2:
            return "SIGUSR2";
        case SIGPIPE:
            return "SIGPIPE";
        case SIGALRM:
            return "SIGALRM";
        case SIGTERM:
            return "SIGTERM";
        case SIGCHLD:
            return "SIGCHLD";
        case SIGCONT:
            return "SIGCONT";
        case SIGSTOP:
            return "SIGSTOP";
        case SIGTSTP:
            return "SIGTSTP";
        case SIGSYS:
            return "SIGSYS";
        case SIGXCPU:
            return "SIGXCPU";
        case SIGXFSZ:
            return "SIGXFSZ";
        default:
            return nullptr;
    }
}

}  // namespace

std::string to_string(const exit_status& s) {
    std::string out = "pid " + std::to_string(s.pid);
    if (s.exited())
        return out + " exited with code " + std::to_string(s.exit_code());
    if (s.signaled()) {
        out += " killed by signal " + std::to_string(s.term_signal());
        if (const char* name = signal_name(s.term_signal()))
            out += std::string(" (") + name + ")";
        if (s.core_dumped())
            out += ", core dumped";
        return out;
    }
    if (s.unknown())
        return out + " was reaped by other code; its status is unknown";
    return out + " ended with status " + std::to_string(s.raw);
}

}  // namespace zreap
