#ifndef IOBENCH_CLIBURING_SHIM_H
#define IOBENCH_CLIBURING_SHIM_H
// <features.h> first: without it a clean build hits an fd_set / __fds_bits module conflict.
#include <features.h>
#include <liburing.h>
#include <errno.h>
#include <unistd.h>
#include <sys/syscall.h>

// Kernel 6.12 (IORING_FEAT_MIN_TIMEOUT) took io_uring_getevents_arg's `pad` for a minimum batch
// wait in microseconds; liburing 2.3 predates it (its io_uring_submit_and_wait_min_timeout is 2.8).
#ifndef IORING_FEAT_MIN_TIMEOUT
#define IORING_FEAT_MIN_TIMEOUT (1U << 15)
#endif

struct iobench_getevents_arg {
    __u64 sigmask;
    __u32 sigmask_sz;
    __u32 min_wait_usec;
    __u64 ts;
};

/// Submits what is queued and waits: up to `min_wait_usec` for `wait_nr` completions, after
/// which any one completion ends the wait (the kernel's min-timeout batch wait). As liburing
/// 2.3 has no call for it, this publishes the SQ tail itself (what its internal flush does for
/// a ring without SQPOLL) and enters the kernel once. Returns the submitted count or -errno.
static inline int iobench_submit_and_wait_batch(struct io_uring *ring, unsigned wait_nr, unsigned min_wait_usec) {
    struct io_uring_sq *sq = &ring->sq;
    unsigned tail = sq->sqe_tail;
    if (sq->sqe_head != tail) {
        sq->sqe_head = tail;
        io_uring_smp_store_release(sq->ktail, tail);
    }
    unsigned to_submit = tail - *sq->khead;
    struct iobench_getevents_arg arg = { 0, 0, min_wait_usec, 0 };
    long rc = syscall(__NR_io_uring_enter, ring->ring_fd, to_submit, wait_nr,
                      IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg, sizeof(arg));
    return rc < 0 ? -errno : (int)rc;
}
#endif
