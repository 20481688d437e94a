/* A worker's file writer: one thread that writes the chunks of the file
 * being received, in order, and fsyncs it, while the worker goes on
 * receiving (and then parsing). With O_DIRECT files the data goes from
 * these buffers to the disk without a copy into the page cache, which on
 * a 512 KB instance can cost more CPU than the rest of the store; whether
 * a file is written so is the caller's choice (write_mode.h).
 *
 * Used by one thread at a time (the worker's); jobs run in the order they
 * were queued. Errors are kept until pn_writer_wait() returns them. */
#ifndef PN_WRITER_H
#define PN_WRITER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Buffer size, and the alignment O_DIRECT needs for offsets, lengths and
 * addresses (the largest logical block size in use). */
#define PN_WRITER_CHUNK (128 * 1024)
#define PN_WRITER_ALIGN 4096
/* Buffers in flight: receiving may run this far ahead of the disk. A
 * buffer keeps its bytes until it is handed out again. */
#define PN_WRITER_SLOTS 8

typedef struct pn_writer pn_writer;

/* Starts the thread; without one (pthread_create failed), jobs run in the
 * caller when queued. */
int pn_writer_create(pn_writer **ret_writer);

/* pthread_create, called through this pointer so that tests can refuse
 * the thread as a system out of threads would. Production never changes
 * it. */
extern int (*pn_writer_thread_create)(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *), void *arg);
void pn_writer_free(pn_writer *w); /* waits for queued jobs; NULL is a no-op */

/* The buffer the next pn_writer_write() sends: PN_WRITER_CHUNK bytes,
 * aligned to PN_WRITER_ALIGN. Waits while every buffer is queued. */
char *pn_writer_buffer(pn_writer *w);

/* Queues the first len bytes of that buffer for writing at fd's offset.
 * direct: fd was opened with O_DIRECT; a length that is not a multiple
 * of PN_WRITER_ALIGN (the file's end) then switches it off first. Without
 * O_DIRECT, writeback of what was written is started at once. */
void pn_writer_write(pn_writer *w, int fd, size_t len, bool direct);

/* Queues an fsync of fd. */
void pn_writer_fsync(pn_writer *w, int fd);

/* Waits for every queued job; returns 0 or the first failure (-errno)
 * since the previous wait. */
int pn_writer_wait(pn_writer *w);

/* When the last fsync that succeeded returned, on pn_writer_clock_ns();
 * 0 before any. */
int64_t pn_writer_synced_ns(pn_writer *w);

/* The clock of pn_writer_synced_ns(): CLOCK_MONOTONIC, in ns. */
int64_t pn_writer_clock_ns(void);

#endif
