#pragma once

// A loop's own wake-up channel: what loop::post(), loop::request_stop() and the handlers of
// loop::add_signal() write to, from any thread or a signal handler, so that the loop's poll
// returns. An eventfd on Linux (one fd), a non-blocking pipe elsewhere; close-on-exec.

#include <cstdint>
#include <string>

#include "unique_fd.hpp"
#include "zreap_config.h"

namespace zreap::detail {

class wake_channel {
  public:
    /// Throws std::system_error naming @p who.
    explicit wake_channel(const std::string& who);

    /// The fd to poll for input.
    int fd() const noexcept { return read_.get(); }
    /// The fd notify() writes to; a signal handler writes 8 bytes there itself.
    int notify_fd() const noexcept { return write_ ? write_.get() : read_.get(); }

    /// Makes fd() readable. Async-signal-safe (one write), callable from any thread; a full
    /// pipe is already readable, so EAGAIN is ignored.
    void notify() const noexcept { notify_fd_write(notify_fd()); }

    /// Writes 8 bytes (an eventfd's unit) to @p fd, keeping errno. Async-signal-safe.
    static void notify_fd_write(int fd) noexcept;

    /// Empties the channel; called before looking at what was posted, so that a notify()
    /// after it makes the channel readable again and nothing is missed.
    void drain() const noexcept;

  private:
    unique_fd read_;
    unique_fd write_;  // none for an eventfd
};

#if ZREAP_HAVE_EVENTFD
/// Linux (wake_linux.cpp): eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), or -1 with errno.
int make_eventfd() noexcept;
#endif

}  // namespace zreap::detail
