/* The listening process: a pool of pre-forked workers fed with accepted
 * sockets, overflow workers up to max_associations, transient rejections
 * beyond, signals, and shutdown. Returns the process exit status. */
#ifndef PN_SERVER_H
#define PN_SERVER_H

#include "config.h"

int pn_server_run(const pn_config *cfg);

#endif
