#ifndef IOBENCH_CSYSTEMSHIMS_H
#define IOBENCH_CSYSTEMSHIMS_H
// What Swift's Glibc module does not export. _GNU_SOURCE is deliberately NOT defined here
// (it would clash with Glibc's module over fd_set); GNU-only calls get wrappers in shims.c.
#include <features.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <poll.h>
#include <pthread.h>

/// accept4(2): Glibc declares it only under _GNU_SOURCE.
int iobench_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);

/// ppoll(2) (GNU-only in Glibc) with a millisecond timeout, -1 for none: the ppoll backend's wait.
int iobench_ppoll(struct pollfd *fds, nfds_t count, int timeout_ms);

/// Pins the calling thread (and the threads it creates later) to the listed CPUs.
/// Returns 0 or -1 with errno set.
int iobench_pin_to_cpus(const int32_t *cpus, int count);

/// Number of CPUs this process may run on, or -1.
int iobench_allowed_cpu_count(void);

/// Names the calling thread (at most 15 bytes are kept), as shown in /proc/self/task/*/comm.
void iobench_set_thread_name(const char *name);

/// Kernel thread id of the caller.
int32_t iobench_gettid(void);

/// Waking a thread that waits in poll without a descriptor (a blocking connection's thread):
/// the waker sends it SIGUSR1, which the thread keeps blocked except inside
/// iobench_poll_wakeable, so a wake sent while it is busy stays pending and ends its next wait
/// at once. Installs the (empty) handler once per process; returns 0 or -1 with errno set.
int iobench_wake_signal_install(void);
/// Blocks the wake signal in the calling thread (call before its first wait).
int iobench_wake_signal_block(void);
/// ppoll(2) with the wake signal unblocked for the wait: -1 with errno EINTR when woken.
int iobench_poll_wakeable(struct pollfd *fds, int count, int timeout_ms);
/// Wakes `thread` (pthread_kill with the wake signal); 0 or an errno value.
int iobench_wake_thread(pthread_t thread);

/// A counter with one writer (its owning thread) and any number of readers. Relaxed atomics:
/// a plain load and store on x86, no locked instruction on the hot path.
static inline void iobench_counter_add(uint64_t *counter, uint64_t amount) {
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + amount, __ATOMIC_RELAXED);
}

static inline uint64_t iobench_counter_load(const uint64_t *counter) {
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

#endif
