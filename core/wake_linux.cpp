// The Linux part of the wake channel: an eventfd is one fd where a pipe is two.

#include <sys/eventfd.h>

#include "wake.hpp"

namespace zreap::detail {

#if ZREAP_HAVE_EVENTFD
int make_eventfd() noexcept {
    return ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}
#endif

}  // namespace zreap::detail
