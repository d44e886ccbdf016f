// The program the spawn tests start. Each mode shows one thing about how it was started,
// on stdout, so the test can check what the child really got.
//
//   exit N            exit with code N
//   signal N          kill itself with signal N
//   sigstatus         print the SigBlk, SigIgn and SigCgt lines of /proc/self/status
//   fds               print the open fds, one per line
//   env [NAME]        print the whole environment, or NAME's value ("<unset>" if unset)
//   cwd               print the working directory
//   ids               print "pid pgid sid"
//   write N           write N bytes to stdout, then exit 0 at once
//   stderr TEXT       write TEXT to stderr, exit 0
//   write-fd N TEXT   write TEXT to fd N, exit 0
//   ignore-term       ignore SIGTERM, print "ready", wait until killed
//   echo              copy stdin to stdout until EOF

#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern char** environ;

namespace {

bool write_all(int fd, const char* p, size_t n) {
    while (n > 0) {
        ssize_t w = ::write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return false;
        p += w;
        n -= static_cast<size_t>(w);
    }
    return true;
}

int usage() {
    std::fprintf(stderr, "spawn_helper: unknown mode\n");
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2)
        return usage();
    std::string mode = argv[1];
    const char* arg = argc > 2 ? argv[2] : nullptr;

    if (mode == "exit" && arg)
        return std::atoi(arg);
    if (mode == "signal" && arg) {
        ::kill(::getpid(), std::atoi(arg));
        return 99;
    }
    if (mode == "sigstatus") {
        FILE* f = std::fopen("/proc/self/status", "r");
        if (!f)
            return 3;
        char line[256];
        while (std::fgets(line, sizeof line, f))
            if (!std::strncmp(line, "SigBlk:", 7) || !std::strncmp(line, "SigIgn:", 7) ||
                !std::strncmp(line, "SigCgt:", 7))
                std::fputs(line, stdout);
        std::fclose(f);
        return 0;
    }
    if (mode == "fds") {
        DIR* d = ::opendir("/proc/self/fd");
        if (!d)
            return 3;
        int self = ::dirfd(d);
        while (dirent* e = ::readdir(d)) {
            if (e->d_name[0] == '.' || std::atoi(e->d_name) == self)
                continue;
            std::printf("%s\n", e->d_name);
        }
        ::closedir(d);
        return 0;
    }
    if (mode == "env") {
        if (arg) {
            const char* v = std::getenv(arg);
            std::printf("%s\n", v ? v : "<unset>");
        } else {
            for (char** e = environ; *e; ++e)
                std::printf("%s\n", *e);
        }
        return 0;
    }
    if (mode == "cwd") {
        char buf[4096];
        if (!::getcwd(buf, sizeof buf))
            return 3;
        std::printf("%s\n", buf);
        return 0;
    }
    if (mode == "ids") {
        std::printf("%d %d %d\n", static_cast<int>(::getpid()), static_cast<int>(::getpgid(0)),
                    static_cast<int>(::getsid(0)));
        return 0;
    }
    if (mode == "write" && arg) {
        std::vector<char> buf(static_cast<size_t>(std::atol(arg)), 'x');
        return write_all(1, buf.data(), buf.size()) ? 0 : 3;
    }
    if (mode == "stderr" && arg)
        return write_all(2, arg, std::strlen(arg)) ? 0 : 3;
    if (mode == "write-fd" && arg && argc > 3)
        return write_all(std::atoi(arg), argv[3], std::strlen(argv[3])) ? 0 : 3;
    if (mode == "ignore-term") {
        ::signal(SIGTERM, SIG_IGN);
        if (!write_all(1, "ready\n", 6))
            return 3;
        for (;;)
            ::pause();
    }
    if (mode == "write-then-wait" && arg) {
        // Ignores SIGTERM, writes arg bytes to stdout, exits once stdin reaches EOF.
        ::signal(SIGTERM, SIG_IGN);
        std::vector<char> buf(static_cast<size_t>(std::atol(arg)), 'x');
        if (!write_all(1, buf.data(), buf.size()))
            return 3;
        for (char c;;) {
            ssize_t n = ::read(0, &c, 1);
            if (n == 0 || (n < 0 && errno != EINTR))
                return 0;
        }
    }
    if (mode == "interleave") {
        // stdout and stderr in turns, for stderr_to_stdout.
        return write_all(1, "out1 ", 5) && write_all(2, "err1 ", 5) && write_all(1, "out2", 4) ? 0
                                                                                               : 3;
    }
    if (mode == "nofile") {
        struct rlimit rl {};
        if (::getrlimit(RLIMIT_NOFILE, &rl) != 0)
            return 3;
        std::printf("%llu\n", static_cast<unsigned long long>(rl.rlim_cur));
        return 0;
    }
    if (mode == "pause") {
        for (;;)
            ::pause();
    }
    if (mode == "tree") {
        // A grandchild in the same process group; its pid on stdout; then both pause.
        pid_t g = ::fork();
        if (g < 0)
            return 3;
        if (g == 0) {
            for (;;)
                ::pause();
        }
        std::printf("%d\n", static_cast<int>(g));
        std::fflush(stdout);
        for (;;)
            ::pause();
    }
    if (mode == "echo") {
        char buf[65536];
        for (;;) {
            ssize_t n = ::read(0, buf, sizeof buf);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return n == 0 ? 0 : 3;
            if (!write_all(1, buf, static_cast<size_t>(n)))
                return 3;
        }
    }
    return usage();
}
