#include "wake.hpp"

#include <unistd.h>

#include <cerrno>

#include "error.hpp"
#include "pipe.hpp"

namespace zreap::detail {

wake_channel::wake_channel(const std::string& who) {
#if ZREAP_HAVE_EVENTFD
    read_.reset(make_eventfd());
    if (!read_)
        throw_errno(who + ": eventfd");
#else
    pipe_pair p = make_cloexec_pipe(true, who);
    read_ = std::move(p.read);
    write_ = std::move(p.write);
#endif
}

void wake_channel::notify_fd_write(int fd) noexcept {
    const int saved = errno;
    const std::uint64_t one = 1;
    ssize_t n;
    while ((n = ::write(fd, &one, sizeof one)) < 0 && errno == EINTR) {
    }
    (void)n;  // EAGAIN: a full pipe or a saturated eventfd is readable already
    errno = saved;
}

void wake_channel::drain() const noexcept {
    // An eventfd read returns the whole count at once; a pipe may need several reads.
    std::uint64_t buf[64];
    for (;;) {
        ssize_t n = ::read(read_.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || static_cast<std::size_t>(n) < sizeof buf)
            return;
    }
}

}  // namespace zreap::detail
