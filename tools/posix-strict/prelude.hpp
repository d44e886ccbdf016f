// Force-included (-include) into core and the POSIX backends when -Dposix_strict=true.
//
// That build compiles them with -U_GNU_SOURCE -D_POSIX_C_SOURCE=200809L, so glibc declares
// only POSIX.1-2008 and a Linux-only call (pipe2, accept4, dup3, clone, syscall,
// posix_spawn_file_actions_addchdir_np, ...) fails to compile. libstdc++ however was
// configured against a glibc with its GNU extensions visible, and its <mutex>,
// <condition_variable>, <shared_mutex> and <semaphore> call the glibc-only pthread_*clock*
// functions. Those few are declared here, with glibc's signatures, so that the standard
// library still compiles while zreap's own code sees nothing beyond POSIX.

#pragma once

#include <pthread.h>
#include <semaphore.h>
#include <time.h>

#if defined(__GLIBC__) && !defined(__USE_GNU)
extern "C" {
int pthread_cond_clockwait(pthread_cond_t*, pthread_mutex_t*, clockid_t, const struct timespec*);
int pthread_mutex_clocklock(pthread_mutex_t*, clockid_t, const struct timespec*);
int pthread_rwlock_clockrdlock(pthread_rwlock_t*, clockid_t, const struct timespec*);
int pthread_rwlock_clockwrlock(pthread_rwlock_t*, clockid_t, const struct timespec*);
int sem_clockwait(sem_t*, clockid_t, const struct timespec*);
}
#endif
