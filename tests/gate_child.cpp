// A child program for the tests: waits until its stdin reaches end of file (the test
// closes the gate pipe's write end), then exits with the code given as argv[1]. Being a
// separate small program, without sanitizers, its exit costs little even when the test
// process is built with them: the exit storm then measures the loop, not the teardown of
// a thousand copies of a sanitized address space.

#include <unistd.h>

#include <cerrno>
#include <cstdlib>

int main(int argc, char** argv) {
    char buf[64];
    for (;;) {
        ssize_t n = ::read(0, buf, sizeof buf);
        if (n == 0 || (n < 0 && errno != EINTR))
            break;
    }
    return argc > 1 ? std::atoi(argv[1]) : 0;
}
