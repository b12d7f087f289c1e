#define _GNU_SOURCE
#include <sched.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <errno.h>
#include <string.h>
#include <signal.h>
#include <poll.h>
#include <pthread.h>
#include "CSystemShims.h"

int iobench_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}

int iobench_pin_to_cpus(const int32_t *cpus, int count) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int i = 0; i < count; i++) {
        if (cpus[i] < 0 || cpus[i] >= CPU_SETSIZE) { errno = EINVAL; return -1; }
        CPU_SET(cpus[i], &set);
    }
    return sched_setaffinity(0, sizeof(set), &set);
}

int iobench_allowed_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return -1;
    return CPU_COUNT(&set);
}

void iobench_set_thread_name(const char *name) {
    prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}

int32_t iobench_gettid(void) {
    return (int32_t)syscall(SYS_gettid);
}

static void iobench_wake_handler(int signal) { (void)signal; }

static int iobench_wake_install_result = 0;

static void iobench_wake_install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = iobench_wake_handler;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: the wait must end
    iobench_wake_install_result = sigaction(SIGUSR1, &action, NULL);
}

int iobench_wake_signal_install(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, iobench_wake_install);
    return iobench_wake_install_result;
}

/// The calling thread's mask during a wakeable wait (its own mask without the wake signal),
/// computed once, so a wait costs one system call.
static __thread sigset_t iobench_wait_mask;

int iobench_wake_signal_block(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    int rc = pthread_sigmask(SIG_BLOCK, &set, &iobench_wait_mask);
    sigdelset(&iobench_wait_mask, SIGUSR1);
    return rc;
}

/// A millisecond timeout as ppoll's timespec in `storage`: NULL (no limit) when negative.
static struct timespec *iobench_timeout(int timeout_ms, struct timespec *storage) {
    if (timeout_ms < 0) return NULL;
    storage->tv_sec = timeout_ms / 1000;
    storage->tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
    return storage;
}

int iobench_poll_wakeable(struct pollfd *fds, int count, int timeout_ms) {
    struct timespec timeout;
    return ppoll(fds, (nfds_t)count, iobench_timeout(timeout_ms, &timeout), &iobench_wait_mask);
}

int iobench_wake_thread(pthread_t thread) {
    return pthread_kill(thread, SIGUSR1);
}

int iobench_ppoll(struct pollfd *fds, nfds_t count, int timeout_ms) {
    struct timespec timeout;
    return ppoll(fds, count, iobench_timeout(timeout_ms, &timeout), NULL);
}
