#pragma once

/// @file
/// ZREAP_API, the mark on everything libzreap exports.

/// Marks a declaration of the public API as exported from the shared library. libzreap is
/// compiled with hidden visibility (-fvisibility=hidden), so a function the headers declare
/// without this mark is not part of the library's ABI and cannot be called from outside it:
/// zreap::detail, loop::impl and child::state stay internal. Empty for compilers that know
/// no visibility attribute.
#if defined(__GNUC__) || defined(__clang__)
#define ZREAP_API __attribute__((visibility("default")))
#else
#define ZREAP_API
#endif
