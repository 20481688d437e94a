#include "fsio.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

pn_fsio_ops pn_fsio = {
    .openat = openat,
    .writev = writev,
    .fsync = fsync,
    .close = close,
    .linkat = linkat,
    .unlinkat = unlinkat,
    .mkdirat = mkdirat,
};
