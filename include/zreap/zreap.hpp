#pragma once

/// @file
/// The whole public API of zreap.

#include <zreap/backend.hpp>
#include <zreap/exit_status.hpp>
#include <zreap/loop.hpp>
#include <zreap/spawn.hpp>
#include <zreap/version.hpp>
