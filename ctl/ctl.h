/* pacsnodectl's commands (ctl/). Each takes the configuration and its
 * own argv (argv[0] the command's name) and returns the exit status. */
#ifndef PN_CTL_H
#define PN_CTL_H

#include <stdbool.h>

#include "config.h"

int pn_ctl_status(const pn_config *cfg, int argc, char **argv);
int pn_ctl_passwd(const pn_config *cfg, int argc, char **argv);
int pn_ctl_verify(const pn_config *cfg, int argc, char **argv);
int pn_ctl_import(const pn_config *cfg, int argc, char **argv);
int pn_ctl_reindex(const pn_config *cfg, int argc, char **argv);

/* Whether something answers on the node's DICOM port (status.c). */
bool pn_ctl_node_listening(const pn_config *cfg);
int pn_ctl_delete(const pn_config *cfg, int argc, char **argv);
int pn_ctl_retention(const pn_config *cfg, int argc, char **argv);

#endif
