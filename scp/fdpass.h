/* Handing an accepted socket from the listener to a worker over a
 * SOCK_SEQPACKET pair (SCM_RIGHTS), and the worker's "idle again" byte. */
#ifndef PN_FDPASS_H
#define PN_FDPASS_H

int pn_fd_send(int channel, int fd);
/* 0 on EOF (the listener is gone), 1 with *ret_fd, or negative errno. */
int pn_fd_recv(int channel, int *ret_fd);

#endif
