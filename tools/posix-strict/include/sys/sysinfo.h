// Shadows the system's <sys/sysinfo.h> in the -Dposix_strict=true build. glibc declares what this
// Linux-only header holds whatever the feature-test macros say, so only refusing the header
// keeps it out of core and the POSIX backends. Linux-only code belongs in backends/pidfd,
// backends/signalfd or a *_linux.cpp file behind a meson probe (docs/portability.md).
#error "<sys/sysinfo.h> is Linux-only: not for core/ or a POSIX backend (see docs/portability.md)"
