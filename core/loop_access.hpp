#pragma once

// The parts of a loop that zreap::spawn and zreap::child use and the public API does not
// offer: they work on the loop's shared state, which stays put when the loop object moves.

#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include <zreap/loop.hpp>

namespace zreap::detail {

struct loop_access {
    static std::shared_ptr<loop::impl> state(loop& lp) { return lp.impl_; }
};

/// The loop's backend.
backend loop_backend(const loop::impl& lp) noexcept;

/// loop_options::raise_fd_limit.
bool loop_raises_fd_limit(const loop::impl& lp) noexcept;

/// Watches a child that zreap::spawn started: as loop::watch_child, but the loop also
/// marks @p owner reaped at the reap, lends @p owner's pidfd to the backend (one fd for
/// both), and kills the child at destruction under destroy_policy::kill_spawned.
source_id watch_spawned(loop::impl& lp, const std::shared_ptr<child::state>& owner,
                        std::function<void(const exit_status&)> cb, std::vector<int> drain_first);

/// loop::add_timer and loop::remove on the shared state.
source_id add_timer(loop::impl& lp, std::chrono::milliseconds first,
                    std::chrono::milliseconds every, std::function<void()> cb);
void remove(loop::impl& lp, source_id id) noexcept;

}  // namespace zreap::detail
