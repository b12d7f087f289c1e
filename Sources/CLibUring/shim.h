#ifndef IOBENCH_CLIBURING_SHIM_H
#define IOBENCH_CLIBURING_SHIM_H
// <features.h> first: without it a clean build hits an fd_set / __fds_bits module conflict.
#include <features.h>
#include <liburing.h>
#endif
